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
    from fedfleet.server.host.compose_secrets import create_fleet_secrets

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
