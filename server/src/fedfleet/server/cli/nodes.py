"""``fedfleet nodes``: register, list and revoke the devices allowed to join."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import click

from fedfleet.server.cli.options import (
    connection_options,
    control_from,
    echo_rows,
    format_option,
)
from fedfleet.server.host.nodekeys import MAX_KEY_BYTES, KeyFileError, NodeKey, key_files
from fedfleet.shared.atomic import write_atomic


@click.group("nodes")
def nodes() -> None:
    """Register, list and revoke the devices allowed to join.

    \b
    Example:
        fedfleet nodes register edge-1.pub --name edge-1
        fedfleet nodes register devices/
        fedfleet nodes list
        fedfleet nodes revoke 11686828081510409264
    """


@nodes.command("register")
@click.argument("public_keys", nargs=-1, required=True,
                type=click.Path(allow_dash=True, path_type=Path))
@click.option("--name", default=None,
              help="A name for the device (one key only) [default: the file's name "
                   "without .pub].")
@connection_options
def nodes_register(public_keys: tuple[Path, ...], name: str | None, server: str,
                   insecure: bool, root_certificates: Path | None,
                   state_dir: Path) -> None:
    """Allow the devices whose public keys are PUBLIC_KEYS to join.

    Each of PUBLIC_KEYS is a key file, a folder (its *.pub files) or '-' (one key
    on stdin). All keys go over one connection, a line for each, then a summary; a
    key registered before is reported and skipped. Exits 1 if any key was refused
    (not an ECDSA OpenSSH public key, unreadable, ...), after registering the others.

    \b
    Example:
        fedfleet nodes register edge-1.pub --name edge-1
        fedfleet nodes register devices/            # every devices/*.pub
        fedfleet nodes register edge-1.pub edge-2.pub keys/
        docker compose exec -T server fedfleet nodes register - --name edge-1 < edge-1.pub
    """
    started = time.monotonic()
    if str(public_keys[0]) == "-" and len(public_keys) == 1:
        state_dir.mkdir(parents=True, exist_ok=True)
        stdin_key = state_dir / "incoming.pub"
        write_atomic(stdin_key, sys.stdin.read(MAX_KEY_BYTES + 1))
        keys = [NodeKey(stdin_key, name)]
    elif any(str(path) == "-" for path in public_keys):
        raise click.BadParameter("'-' (stdin) takes one key alone", param_hint="PUBLIC_KEYS")
    else:
        try:
            keys = key_files(public_keys)
        except KeyFileError as err:
            raise click.BadParameter(str(err), param_hint="PUBLIC_KEYS") from None
        if not keys:
            raise click.BadParameter("no *.pub key files in " + ", ".join(
                str(p) for p in public_keys), param_hint="PUBLIC_KEYS")
        if name is not None:
            if len(keys) > 1:
                raise click.BadParameter(f"--name names one device, but {len(keys)} "
                                         "keys were given; each takes its file's name",
                                         param_hint="--name")
            keys = [NodeKey(keys[0].path, name, keys[0].folder)]
    control = control_from(server, insecure, root_certificates, state_dir)
    results = control.register_nodes(
        keys, on_result=lambda result: click.echo(result.line()))
    counts = Counter(result.outcome for result in results)
    click.echo(f"{counts['registered']} registered, {counts['already']} already "
               f"registered, {counts['refused']} refused, of {len(results)} key(s) in "
               f"{time.monotonic() - started:.1f}s")
    if counts["refused"]:
        raise click.ClickException(f"{counts['refused']} key(s) refused; see the "
                                   "'refused' lines above")


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
