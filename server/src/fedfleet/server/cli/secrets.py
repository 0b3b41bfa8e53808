"""``fedfleet secrets``: the CA, certificate and node keys of a compose fleet."""

from __future__ import annotations

from pathlib import Path

import click

from fedfleet.server.cli.options import DIR


@click.command("secrets")
@click.argument("folder", type=DIR)
@click.option("--clients", type=click.IntRange(min=0), default=3, show_default=True,
              help="Demo clients to make node keys for (client-1 ... client-N).")
@click.option("--host", multiple=True,
              help="Extra names or IPs in the server certificate (repeatable or "
                   "comma-separated); localhost, loopback, 'server' and 'gateway' are "
                   "always in.")
@click.option("--owner", type=int, default=None,
              help="Give the files to this UID (when run as root for containers).")
def secrets(folder: Path, clients: int, host: tuple[str, ...], owner: int | None) -> None:
    """Create the CA, server certificate and demo node keys of a compose fleet.

    One folder per service, each mounted read-only into its container only:
    ca/ (the CA, mounted nowhere), server/ (certificate, key, authorized-keys/)
    and client-N/ (ca.crt and its node key). Existing files are kept, so it is
    safe to run on every start; delete FOLDER/server to reissue the certificate.

    \b
    Example:
        fedfleet secrets ./secrets --clients 3 --host fl.example.org
    """
    from fedfleet.server.fleet_secrets import create_fleet_secrets

    names = [f"client-{i}" for i in range(1, clients + 1)]
    extra = [h.strip() for arg in host for h in arg.split(",") if h.strip()]
    made = create_fleet_secrets(folder, names, [*extra, "gateway"], owner=owner)
    for path in made.created:
        click.echo(f"created {path}")
    if made.kept:
        click.echo(f"kept {len(made.kept)} existing file(s) in {folder}")
