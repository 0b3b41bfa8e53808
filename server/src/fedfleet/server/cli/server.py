"""``fedfleet server``: parse its options, then :func:`fedfleet.server.host.lifecycle.serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fedfleet.server.cli.options import DIR, FILE, run_options, settings_from
from fedfleet.server.host.lifecycle import ServePlan, serve
from fedfleet.server.host.superlink import ServerOptions
from fedfleet.shared.constants import SUPERLINK_PORT


def tls_files(insecure: bool, tls_dir: Path, ca: Path | None, cert: Path | None,
              key: Path | None) -> tuple[Path, Path, Path] | None:
    """Return the CA, certificate and key to serve with, or None with --insecure.

    TLS is on unless --insecure: each file comes from its --ssl-* option or TLS_DIR.
    """
    if insecure:
        if any(p is not None for p in (ca, cert, key)):
            raise click.UsageError("--insecure and --ssl-* files exclude each other")
        return None
    files = (ca or tls_dir / "ca.crt", cert or tls_dir / "server.pem",
             key or tls_dir / "server.key")
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise click.UsageError(
            f"TLS is on by default, and {missing[0]} does not exist: create certificates "
            f"with 'fedfleet certs --out {tls_dir} --host <name devices use>' (or point "
            "--tls-dir / --ssl-* at yours); --insecure runs without TLS, for local "
            "experiments only")
    return files


INSECURE_WARNING = (
    "WARNING: --insecure: plain HTTP, no device authentication, and anyone who can reach "
    "this port can submit runs that execute code here and on every device. Use it for "
    "local experiments only.")


def warn_insecure() -> None:
    """Print the loud --insecure warning to stderr."""
    click.secho(INSECURE_WARNING, fg="yellow", bold=True, err=True)


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 lets devices on the network in.")
@click.option("--port", type=click.IntRange(1, 65535), default=SUPERLINK_PORT,
              show_default=True, help="The SuperLink's one HTTP(S) port.")
@click.option("--state-dir", type=DIR, default=Path("fedfleet-state"),
              show_default=True, help="SuperLink database, logs and CLI settings.")
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Where each run writes run-<id>/ with metrics and models.")
@click.option("--tls-dir", type=DIR, default=Path("certificates"), show_default=True,
              help="Folder with ca.crt, server.pem and server.key (from 'fedfleet certs').")
@click.option("--ssl-ca-certfile", type=FILE, help="CA certificate [default: TLS_DIR/ca.crt]")
@click.option("--ssl-certfile", type=FILE,
              help="Server certificate [default: TLS_DIR/server.pem]")
@click.option("--ssl-keyfile", type=FILE,
              help="Server private key [default: TLS_DIR/server.key]")
@click.option("--node-auth/--no-node-auth", default=None,
              help="Admit only devices whose keys are registered ('fedfleet nodes "
                   "register' or --authorized-keys)  [default: on with TLS]")
@click.option("--authorized-keys", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None,
              help="Folder of device public keys (NAME.pub) to register on start; a key "
                   "is registered once, so a revoked one stays out.")
@click.option("--insecure", is_flag=True,
              help="Plain HTTP and no node authentication: local experiments only.")
@click.option("--no-run", is_flag=True, help="Only serve; submit runs with 'fedfleet run'.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a run a crash interrupted (from its last completed round) "
                   "instead of starting a new one.")
@click.option("--exit-when-done", is_flag=True,
              help="Stop the server once the run has finished.")
@run_options
def server(host: str, port: int, state_dir: Path, output_dir: Path, tls_dir: Path,
           ssl_ca_certfile: Path | None, ssl_certfile: Path | None,
           ssl_keyfile: Path | None, node_auth: bool | None,
           authorized_keys: Path | None, insecure: bool, no_run: bool, resume: bool,
           exit_when_done: bool, **run_settings: Any) -> None:
    """Start the server: a SuperLink, and a training run followed round by round.

    TLS and node authentication are on by default: the certificates come from
    TLS_DIR ('fedfleet certs') and only devices whose keys are registered may join.
    Clients join with 'fedfleet join'. Every round is written to
    OUTPUT_DIR/run-<id>/ (metrics.json, metrics.csv, checkpoints/), and the final
    model to final_model.keras. The server keeps serving after the run unless
    --exit-when-done is given.

    \b
    Example:
        fedfleet certs --host fl.example.org
        fedfleet server --host 0.0.0.0 --authorized-keys devices/ --rounds 20
        fedfleet server --insecure --rounds 3 --min-clients 2   # local experiment
    """
    ssl = tls_files(insecure, tls_dir, ssl_ca_certfile, ssl_certfile, ssl_keyfile)
    if ssl is None:
        if node_auth:
            raise click.UsageError("--node-auth needs TLS: drop --insecure (create "
                                   "certificates with 'fedfleet certs')")
        warn_insecure()
    node_auth = ssl is not None if node_auth is None else node_auth
    settings = settings_from(run_settings, output_dir)
    opts = ServerOptions(host=host, port=port, state_dir=state_dir, insecure=insecure,
                         ssl_files=ssl, node_auth=node_auth)
    serve(ServePlan(opts, settings, output_dir, authorized_keys=authorized_keys,
                    start_run=not no_run, resume=resume, exit_when_done=exit_when_done,
                    live=sys.stdout.isatty()),
          echo=click.echo)
