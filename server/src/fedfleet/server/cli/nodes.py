"""``fedfleet nodes``: register, list and revoke the devices allowed to join."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedfleet.server.cli.options import (
    connection_options,
    control_from,
    echo_rows,
    format_option,
)
from fedfleet.shared.atomic import write_atomic


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
    node_id = control_from(server, insecure, root_certificates, state_dir).register_node(
        public_key, name)
    click.echo(f"registered node {node_id}")


@nodes.command("list")
@connection_options
@format_option
def nodes_list(server: str, insecure: bool, root_certificates: Path | None,
               state_dir: Path, format: str) -> None:
    """List registered devices and whether they are online.

    \b
    Example:
        fedfleet nodes list
        docker compose exec server fedfleet nodes list
    """
    echo_rows(control_from(server, insecure, root_certificates, state_dir).nodes(), format,
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
    control_from(server, insecure, root_certificates, state_dir).revoke_node(node_id)
    click.echo(f"revoked node {node_id}")
