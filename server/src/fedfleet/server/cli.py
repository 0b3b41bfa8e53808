"""Server-side commands: ``server``, ``run``, ``runs`` and ``status``. Parsing only."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fedfleet.server.certs import create_certificates
from fedfleet.server.control import Control
from fedfleet.server.outputs import read_metrics
from fedfleet.server.recorder import round_line
from fedfleet.server.resume import ResumePoint, interrupted_runs
from fedfleet.server.service import (
    RunFollower,
    ServerOptions,
    register_authorized_keys,
    start_superlink,
    summary,
)
from fedfleet.server.strategies import STRATEGIES, strategy_kwargs
from fedfleet.shared import process
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.compression import METHODS
from fedfleet.shared.constants import SUPERLINK_PORT
from fedfleet.shared.data import load_dataset
from fedfleet.shared.models import resolve_builder
from fedfleet.shared.options import ADDRESS
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

D = RunSettings  # defaults live on the dataclass: one source for CLI, compose and apps

RUN_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--rounds", type=click.IntRange(min=1),
                 default=D.num_rounds, show_default=True, help="Training rounds."),
    click.option("--local-epochs", type=click.IntRange(min=1), default=D.local_epochs,
                 show_default=True, help="Epochs each client trains per round."),
    click.option("--batch-size", type=click.IntRange(min=1), default=D.batch_size,
                 show_default=True, help="Client batch size."),
    click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
                 default=D.learning_rate, show_default=True,
                 help="Client learning rate (Adam)."),
    click.option("--fraction-train", type=click.FloatRange(0, 1, min_open=True),
                 default=D.fraction_train, show_default=True,
                 help="Share of connected clients that train each round."),
    click.option("--fraction-evaluate", type=click.FloatRange(0, 1),
                 default=D.fraction_evaluate, show_default=True,
                 help="Share of clients that evaluate each round (0: none)."),
    click.option("--min-clients", type=click.IntRange(min=1), default=D.min_clients,
                 show_default=True, help="Clients needed before a round starts."),
    click.option("--strategy", type=click.Choice(list(STRATEGIES),
                 case_sensitive=False), default=D.strategy, show_default=True,
                 help="Aggregation strategy."),
    click.option("--strategy-param", multiple=True,
                 metavar="KEY=VALUE",
                 help="Strategy parameter, repeatable (e.g. proximal_mu=0.1, beta=0.2, "
                      "num_malicious_nodes=1, eta=0.01)."),
    click.option("--model", default=D.model, show_default=True,
                 help="Model: cnn, mlp, or package.module:function."),
    click.option("--input-shape", default=None,
                 help="Model input shape, e.g. 28,28,1 [default: from --eval-data]"),
    click.option("--num-classes", type=click.IntRange(min=2), default=None,
                 help="Number of classes [default: from --eval-data]"),
    click.option("--partitioning", type=click.Choice(["iid", "dirichlet"]),
                 default=D.partitioning, show_default=True,
                 help="How demo clients split a shared dataset (--partition I/N)."),
    click.option("--dirichlet-alpha", type=click.FloatRange(min=0, min_open=True),
                 default=D.dirichlet_alpha, show_default=True,
                 help="Dirichlet concentration; small = more skewed labels."),
    click.option("--data-seed", type=int, default=D.data_seed, show_default=True,
                 help="Seed for partitions and local hold-out splits."),
    click.option("--eval-fraction", type=click.FloatRange(0, 1, max_open=True),
                 default=D.eval_fraction, show_default=True,
                 help="Share of each client's data held out for its evaluation."),
    click.option("--eval-data", default=D.eval_data, show_default=True,
                 help="Server-side test set for centralized evaluation ('' for none)."),
    click.option("--client-eval", type=click.Choice(["with-train", "separate"]),
                 default=D.client_eval, show_default=True,
                 help="with-train: clients score the global model at the start of the "
                      "next train message (one message per round); separate: Flower's "
                      "evaluate message every round."),
    click.option("--compression", type=click.Choice(METHODS),
                 default=D.compression, show_default=True,
                 help="Send global weights as float16 and client updates as float16 "
                      "or int8 (per-tensor scale); float16 is also deflated (lossless)."),
    click.option("--max-examples", type=click.IntRange(min=1), default=D.max_examples,
                 show_default=True,
                 help="Reject a reply claiming more training examples than this."),
    click.option("--max-examples-ratio", type=click.FloatRange(min=0),
                 default=D.max_examples_ratio, show_default=True,
                 help="A reply's num-examples counts at most this many times the "
                      "round's median claim in the weighted average (0: no cap)."),
    click.option("--max-update-norm-ratio", type=click.FloatRange(min=0),
                 default=D.max_update_norm_ratio, show_default=True,
                 help="Reject a reply whose update norm exceeds this many times the "
                      "round's median (needs 3+ replies; 0: off)."),
    click.option("--min-replies", type=click.IntRange(min=1), default=D.min_replies,
                 show_default=True,
                 help="Usable replies a round needs when it closes; with fewer the "
                      "run ends with the reasons."),
    click.option("--round-timeout", type=click.FloatRange(min=1), default=D.round_timeout,
                 show_default=True,
                 help="Seconds a round waits at most for client replies (the deadline "
                      "when fewer than --round-quorum answer)."),
    click.option("--round-quorum", type=click.FloatRange(0, 1, min_open=True),
                 default=D.round_quorum, show_default=True,
                 help="Share of the round's clients whose replies start the grace "
                      "period; 1 waits for all of them up to --round-timeout."),
    click.option("--round-grace", type=click.FloatRange(min=0), default=D.round_grace,
                 show_default=True,
                 help="After the quorum, wait this many times as long again as the "
                      "quorum took (at least 10 s) for the other clients, then close "
                      "the round."),
    click.option("--client-wait-timeout", type=click.FloatRange(min=1),
                 default=D.client_wait_timeout, show_default=True,
                 help="Seconds to wait for --min-clients before giving up."),
]


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the run-setting options to a command."""
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


def settings_from(options: dict[str, Any], output_dir: Path) -> RunSettings:
    """Build run settings from parsed options; shape and classes from the test set."""
    values = {k: options.pop(k) for k in list(options)
              if k in RunSettings.__dataclass_fields__}
    values["num_rounds"] = options.pop("rounds")
    values["strategy_params"] = ",".join(options.pop("strategy_param") or ())
    values["fedfleet_version"] = __version__
    values["output_dir"] = str(output_dir.resolve())
    shape, classes = values.pop("input_shape"), values.pop("num_classes")
    if (shape is None or classes is None) and values["eval_data"]:
        test = load_dataset(values["eval_data"], split="test")
        shape = shape or ",".join(str(d) for d in test.sample_shape)
        classes = classes or int(test.y.max()) + 1
    if shape is not None:
        values["input_shape"] = shape
    if classes is not None:
        values["num_classes"] = classes
    settings = RunSettings(**values)
    strategy_kwargs(settings)  # unknown strategy parameters fail here, not mid-run
    resolve_builder(settings.model)
    return settings


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


DEFAULT_CA = "certificates/ca.crt"
"""Where 'fedfleet certs' puts the CA by default; the admin commands look there."""

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
DIR = click.Path(file_okay=False, path_type=Path)


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
    # `docker stop`, systemd and process managers send SIGTERM: leave via `finally` so
    # the SuperLink (its own process group) is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ready = state_dir / "ready"  # for healthchecks: the server is up and keys registered
    ready.unlink(missing_ok=True)
    superlink = start_superlink(opts)
    try:
        if authorized_keys is not None:
            for line in register_authorized_keys(opts.control(), authorized_keys,
                                                 state_dir):
                click.echo(line)
        ready.touch()
        if not no_run:
            control = opts.control()
            interrupted = find_interrupted(output_dir) if resume else None
            if interrupted is not None:
                click.echo(f"Run {interrupted.run_id} was interrupted after round "
                           f"{interrupted.last_round}; continuing it")
                settings = RunSettings.from_run_config(interrupted.settings).replace(
                    resume_from=str(interrupted.run_dir.resolve()))
            _submit_and_follow(control, settings, state_dir, output_dir,
                               alive=lambda: superlink.poll() is None)
        if exit_when_done:
            return
        click.echo("Server ready; stop it with Ctrl-C.")
        superlink.wait()
        raise click.ClickException(f"the SuperLink exited with code "
                                   f"{superlink.returncode}; see {state_dir}/superlink.log")
    except KeyboardInterrupt:
        click.echo("Stopping.")
    finally:
        ready.unlink(missing_ok=True)
        process.stop(superlink)


def find_interrupted(output_dir: Path) -> ResumePoint | None:
    """Return the newest run in ``output_dir`` that a crash interrupted.

    Its ServerApp ran under the SuperLink this command started last time, so a record
    still marked running, seen from a freshly started server, belongs to a dead run.
    """
    points = interrupted_runs(output_dir)
    return points[0] if points else None


def _submit_and_follow(control: Control, settings: RunSettings, state_dir: Path,
                       output_dir: Path, alive: Callable[[], bool] = lambda: True) -> None:
    run_id = control.submit(settings, state_dir / "bundle")
    click.echo(f"Run {run_id} started: {settings.num_rounds} rounds of "
               f"{settings.strategy}, waiting for {settings.min_clients} clients")
    record = RunFollower(control, run_id, output_dir, on_line=click.echo).follow(alive)
    click.echo(summary(record, output_dir / f"run-{run_id}"))


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that point the Control API client at a server."""
    for option in reversed([
        click.option("--server", type=ADDRESS, default=f"127.0.0.1:{SUPERLINK_PORT}",
                     show_default=True, help="The SuperLink (from the server host)."),
        click.option("--insecure", is_flag=True, help="The server runs without TLS."),
        click.option("--root-certificates", type=FILE, default=None,
                     envvar="FEDFLEET_ROOT_CERTIFICATES",
                     help="CA certificate of the server's TLS certificate "
                          "[default: certificates/ca.crt if present, else the system's]"),
        click.option("--state-dir", type=DIR, default=Path("fedfleet-state"),
                     show_default=True, help="Where the CLI keeps its settings."),
    ]):
        func = option(func)
    return func


def _echo_rows(rows: list[dict[str, Any]], format: str, header: str,
               line: Callable[[dict[str, Any]], str]) -> None:
    """Print ``rows`` as JSON, or as a table: ``header`` then one ``line`` per row."""
    if format == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(header)
    for row in rows:
        click.echo(line(row))


def _control(server: str, insecure: bool, root_certificates: Path | None,
             state_dir: Path) -> Control:
    if not insecure and root_certificates is None and Path(DEFAULT_CA).is_file():
        root_certificates = Path(DEFAULT_CA)
    return Control(server, state_dir / "cli", insecure=insecure,
                   root_certificates=root_certificates)


@click.command("run")
@connection_options
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Output directory on the server host.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Print rounds until the run ends.")
@run_options
def run(server: str, insecure: bool, root_certificates: Path | None, state_dir: Path,
        output_dir: Path, follow: bool, **run_settings: Any) -> None:
    """Submit a training run to a running server.

    \b
    Example:
        fedfleet run --rounds 20 --strategy fedmedian
        docker compose exec server fedfleet run --rounds 5
    """
    control = _control(server, insecure, root_certificates, state_dir)
    settings = settings_from(run_settings, output_dir)
    if follow:
        _submit_and_follow(control, settings, state_dir, output_dir)
    else:
        click.echo(control.submit(settings, state_dir / "bundle"))


@click.command("runs")
@connection_options
@click.option("--format", "format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def runs(server: str, insecure: bool, root_certificates: Path | None, state_dir: Path,
         format: str) -> None:
    """List the server's runs and their status.

    \b
    Example:
        fedfleet runs
        docker compose exec server fedfleet runs
    """
    _echo_rows(_control(server, insecure, root_certificates, state_dir).runs(), format,
               f"{'RUN ID':<22} {'STATUS':<20} {'ELAPSED':>10}  VERSION",
               lambda row: f"{row['run-id']:<22} {row['status']:<20} "
                           f"{row['elapsed']:>10}  {row['fab-version']}")


@click.command("status")
@click.argument("run_id", type=int)
@connection_options
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Output directory the run writes to.")
def status(run_id: int, server: str, insecure: bool, root_certificates: Path | None,
           state_dir: Path, output_dir: Path) -> None:
    """Show one run's status and the rounds it has finished.

    \b
    Example:
        fedfleet status 4830312951876347621
    """
    row = _control(server, insecure, root_certificates, state_dir).run(run_id)
    click.echo(f"run {run_id}: {row['status']}"
               f"{' (' + row['status-details'] + ')' if row.get('status-details') else ''}"
               f", elapsed {row['elapsed']}")
    record = read_metrics(output_dir / f"run-{run_id}")
    if record is None:
        click.echo(f"no metrics in {output_dir}/run-{run_id}")
        return
    for line in (round_line(r, record["run"].get("num_rounds")) for r in record["rounds"]):
        click.echo(line)
    if record.get("error"):
        click.echo(f"error: {record['error']}")




@click.command("certs")
@click.option("--out", type=DIR, default=Path("certificates"), show_default=True,
              help="Directory for ca.crt, ca.key, server.pem and server.key.")
@click.option("--host", multiple=True,
              help="Name or IP address devices use to reach the server (repeatable). "
                   "localhost, 127.0.0.1, ::1 and 'server' are always included.")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True,
              help="Validity of both certificates.")
@click.option("--force", is_flag=True, help="Replace existing certificates.")
def certs(out: Path, host: tuple[str, ...], days: int, force: bool) -> None:
    """Create a private CA and the server's TLS certificate.

    Keys are written readable by their owner only. Give every device ca.crt;
    keep ca.key offline.

    \b
    Example:
        fedfleet certs --host fl.example.org --host 192.168.1.10
        fedfleet server --host 0.0.0.0 --ssl-ca-certfile certificates/ca.crt \\
            --ssl-certfile certificates/server.pem --ssl-keyfile certificates/server.key
    """
    paths = create_certificates(out, host, days=days, force=force)
    click.echo(f"wrote {paths.ca_cert}, {paths.server_cert} and their keys (mode 600)")
    click.echo(f"devices need {paths.ca_cert}: fedfleet join --root-certificates ca.crt")


@click.group("nodes")
def nodes() -> None:
    """Register, list and revoke the devices allowed to join.

    \b
    Example:
        fedfleet nodes register edge-1.pub --name edge-1
        fedfleet nodes list
        fedfleet nodes revoke 11686828081510409264
    """


@nodes.command("register")
@click.argument("public_key", type=click.Path(allow_dash=True, dir_okay=False,
                                              path_type=Path))
@click.option("--name", default=None, help="A name for the device.")
@connection_options
def nodes_register(public_key: Path, name: str | None, server: str, insecure: bool,
                   root_certificates: Path | None, state_dir: Path) -> None:
    """Allow the device whose public key is PUBLIC_KEY ('-' for stdin) to join.

    \b
    Example:
        fedfleet nodes register edge-1.pub --name edge-1
        docker compose exec -T server fedfleet nodes register - --name edge-1 < edge-1.pub
    """
    if str(public_key) == "-":
        state_dir.mkdir(parents=True, exist_ok=True)
        public_key = state_dir / "incoming.pub"
        write_atomic(public_key, sys.stdin.read())
    elif not public_key.is_file():
        raise click.BadParameter(f"{public_key} does not exist", param_hint="PUBLIC_KEY")
    node_id = _control(server, insecure, root_certificates, state_dir).register_node(
        public_key, name)
    click.echo(f"registered node {node_id}")


@nodes.command("list")
@connection_options
@click.option("--format", "format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def nodes_list(server: str, insecure: bool, root_certificates: Path | None,
               state_dir: Path, format: str) -> None:
    """List registered devices and whether they are online.

    \b
    Example:
        fedfleet nodes list
        docker compose exec server fedfleet nodes list
    """
    _echo_rows(_control(server, insecure, root_certificates, state_dir).nodes(), format,
               f"{'NODE ID':<22} {'STATUS':<12} ONLINE SINCE",
               lambda row: f"{row['node-id']:<22} {row['status']:<12} "
                           f"{row.get('online-at') or ''}")


@nodes.command("revoke")
@click.argument("node_id", type=int)
@connection_options
def nodes_revoke(node_id: int, server: str, insecure: bool,
                 root_certificates: Path | None, state_dir: Path) -> None:
    """Remove a device: it is refused at its next heartbeat (within ~30 s).

    \b
    Example:
        fedfleet nodes revoke 11686828081510409264
    """
    _control(server, insecure, root_certificates, state_dir).revoke_node(node_id)
    click.echo(f"revoked node {node_id}")


@click.command("secrets")
@click.argument("folder", type=DIR)
@click.option("--clients", type=click.IntRange(min=0), default=3, show_default=True,
              help="Demo clients to make node keys for (client-1 ... client-N).")
@click.option("--host", multiple=True,
              help="Extra names or IPs in the server certificate (repeatable or "
                   "comma-separated); localhost, loopback, 'server' and 'gateway' are "
                   "always in.")
@click.option("--group", type=click.IntRange(min=0), default=None,
              help="GID that may read, never write, the service folders (the "
                   "containers' group, 49999 in fedfleet's images); needs root.")
@click.option("--owner", type=click.IntRange(min=0), default=None, hidden=True,
              help="Old name of --group.")
def secrets(folder: Path, clients: int, host: tuple[str, ...], group: int | None,
            owner: int | None) -> None:
    """Create the CA, server certificate and demo node keys of a compose fleet.

    One folder per service, each mounted read-only into its container only:
    ca/ (the CA, mounted nowhere), server/ (certificate, key, authorized-keys/)
    and client-N/ (ca.crt and its node key). Existing files are kept, so it is
    safe to run on every start; delete FOLDER/server to reissue the certificate.
    Everything stays owned by whoever runs it; with --group, the service folders
    become readable (not writable) by that group, and ca/ stays private.

    \b
    Example:
        fedfleet secrets ./secrets --clients 3 --host fl.example.org
    """
    from fedfleet.server.fleet_secrets import create_fleet_secrets

    names = [f"client-{i}" for i in range(1, clients + 1)]
    extra = [h.strip() for arg in host for h in arg.split(",") if h.strip()]
    made = create_fleet_secrets(folder, names, [*extra, "gateway"],
                                group=group if group is not None else owner)
    for path in made.removed:
        click.echo(f"removed symlink {path} (symlinks are never followed here)")
    for path in made.created:
        click.echo(f"created {path}")
    if made.kept:
        click.echo(f"kept {len(made.kept)} existing file(s) in {folder}")
