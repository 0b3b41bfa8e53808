"""``fedfleet certs``: a private CA and the server's TLS certificate."""

from __future__ import annotations

from pathlib import Path

import click

from fedfleet.server.cli.options import DIR
from fedfleet.server.host.certs import create_certificates


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
