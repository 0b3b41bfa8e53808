"""``fedfleet join``: parse options and hand over to :mod:`fedfleet.client.node`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedfleet.client.flower_patch import (
    FLOWER_HEARTBEAT_INTERVAL,
    FLOWER_POLL_INTERVAL,
    HEARTBEAT_INTERVAL_RANGE,
    POLL_INTERVAL_RANGE,
)
from fedfleet.client.node import JoinOptions
from fedfleet.client.node import join as run_join
from fedfleet.client.nodedata import NodeData
from fedfleet.shared.constants import DEFAULT_DATASET, SUPERLINK_PORT, SUPERNODE_PORT
from fedfleet.shared.options import ADDRESS, PARTITION

DEFAULT_NODE_KEY = Path.home() / ".fedfleet" / "node-key"


@click.command("join")
@click.option("--server", type=ADDRESS, default=f"127.0.0.1:{SUPERLINK_PORT}",
              show_default=True, help="The fedfleet server's address.")
@click.option("--data", default=DEFAULT_DATASET, show_default=True,
              help="This device's data: a folder of class subfolders, a .csv, an .npz, "
                   "or builtin:NAME.")
@click.option("--partition", type=PARTITION, default=None,
              help="Train on partition I of N of the data (demo fleets sharing one "
                   "dataset), e.g. 0/3.")
@click.option("--label-column", default="label", show_default=True,
              help="CSV column holding the labels.")
@click.option("--class-names", default="",
              help="Comma-separated label order, for folder or text labels.")
@click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="CA certificate that signed the server's certificate "
                   "[default: the system's CA store]")
@click.option("--node-key", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_NODE_KEY, show_default=True,
              help="This device's private key (from 'fedfleet node-key'); its public "
                   "key must be registered on the server.")
@click.option("--no-node-key", is_flag=True,
              help="Join without a key (servers started with --no-node-auth).")
@click.option("--insecure", is_flag=True,
              help="Plain HTTP and no node key: local experiments only.")
@click.option("--runtime-port", type=click.IntRange(1, 65535), default=SUPERNODE_PORT,
              show_default=True,
              help="Local port of the SuperNode's Runtime API (one per node on a host).")
@click.option("--data-retry", type=click.FloatRange(min=0), default=0, show_default=True,
              help="If the data does not load, report why and check again every this "
                   "many seconds instead of exiting (containers: no restart loop).")
@click.option("--connect-timeout", type=click.FloatRange(min=1), default=120.0,
              show_default=True, help="Seconds to wait for the server to answer.")
@click.option("--warm-trainer/--no-warm-trainer", default=True, show_default=True,
              help="Keep TensorFlow and the model loaded between rounds in one "
                   "long-lived trainer process.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=120.0,
              show_default=True,
              help="When stopped (SIGTERM, Ctrl-C) while answering a message, wait up to "
                   "this many seconds for the reply to be sent first.")
@click.option("--poll-interval", type=click.FloatRange(*POLL_INTERVAL_RANGE),
              default=FLOWER_POLL_INTERVAL, show_default=True,
              help="Seconds an idle device waits between asks for work; new work "
                   "reaches it on average half this late. Raise it for large fleets "
                   "(a patch of Flower 1.42.0's SuperNode).")
@click.option("--heartbeat-interval", type=click.FloatRange(*HEARTBEAT_INTERVAL_RANGE),
              default=FLOWER_HEARTBEAT_INTERVAL, show_default=True,
              help="Seconds between heartbeats; the server marks a device offline after "
                   "two missed ones (a patch of Flower 1.42.0's SuperNode).")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".fedfleet" / "client", show_default=True,
              help="Directory for the node's Flower state (FLWR_HOME) and activity.json "
                   "(idle/busy, for operator tools).")
def join(server: str, data: str, partition: tuple[int, int] | None,
         label_column: str, class_names: str, root_certificates: Path | None,
         node_key: Path, no_node_key: bool, insecure: bool, runtime_port: int,
         data_retry: float, connect_timeout: float, warm_trainer: bool,
         drain_timeout: float, poll_interval: float, heartbeat_interval: float,
         home: Path) -> None:
    """Join this device to a fedfleet server and train on local data.

    The data never leaves the device; only model weights and metrics do. The
    connection uses TLS and the device signs in with its node key (create it
    with 'fedfleet node-key' and have the operator register the public key).
    The command runs until stopped (Ctrl-C) or until the server removes the node;
    stopped while answering a message, it sends the reply first (--drain-timeout).

    \b
    Example:
        fedfleet node-key
        fedfleet join --server fl.example.org:8000 --root-certificates ca.crt \\
            --data /data/images
        fedfleet join --server 127.0.0.1:8000 --partition 0/3 --insecure
        fedfleet join --server fl.example.org:8000 --root-certificates ca.crt \\
            --poll-interval 15 --heartbeat-interval 120
    """
    key = key_to_use(node_key, no_node_key, insecure)
    index, total = partition if partition is not None else (-1, 1)
    node = NodeData(data_path=data, partition_id=index, num_partitions=total,
                    label_column=label_column, class_names=class_names)
    opts = JoinOptions(server=server, node=node, home=home, insecure=insecure,
                       root_certificates=root_certificates, node_key=key,
                       runtime_port=runtime_port,
                       connect_timeout=connect_timeout, data_retry=data_retry,
                       warm_trainer=warm_trainer, drain_timeout=drain_timeout,
                       poll_interval=poll_interval,
                       heartbeat_interval=heartbeat_interval)
    sys.exit(run_join(opts))


def key_to_use(node_key: Path, no_node_key: bool, insecure: bool) -> Path | None:
    """Return the node key to sign in with: on by default, off with --insecure."""
    if no_node_key or (insecure and node_key == DEFAULT_NODE_KEY):
        return None
    if not node_key.is_file():
        raise click.UsageError(
            f"no node key at {node_key}: create one with 'fedfleet node-key --out "
            f"{node_key}' and have the operator register {node_key}.pub ('fedfleet nodes "
            "register'), or pass --no-node-key if the server runs without node auth")
    return node_key


@click.command("node-key")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_NODE_KEY, show_default=True,
              help="Private key file; the public key goes next to it as .pub.")
@click.option("--force", is_flag=True,
              help="Replace an existing key (the device gets a new identity).")
def node_key(out: Path, force: bool) -> None:
    """Create this device's key pair and print the public key for the operator.

    The operator registers the public key with 'fedfleet nodes register'; the
    device then joins with --node-key.

    \b
    Example:
        fedfleet node-key --out /etc/fedfleet/node-key
        fedfleet join --server fl.example.org:8000 --root-certificates ca.crt \\
            --node-key /etc/fedfleet/node-key --data /data
    """
    from fedfleet.shared.keys import create_node_key  # cryptography: only when needed

    public = create_node_key(out, force=force)
    click.echo(public)
    click.echo(f"private key: {out} (mode 600); public key: {out}.pub", err=True)


@click.command("doctor")
@click.option("--server", type=ADDRESS, default=f"127.0.0.1:{SUPERLINK_PORT}",
              show_default=True, help="The fedfleet server's address.")
@click.option("--insecure", is_flag=True, help="The server runs without TLS.")
@click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="CA certificate that signed the server's certificate.")
@click.option("--node-key", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_NODE_KEY, show_default=True,
              help="This device's private key (from 'fedfleet node-key').")
@click.option("--data", default=DEFAULT_DATASET, show_default=True,
              help="This device's data.")
@click.option("--label-column", default="label", show_default=True,
              help="CSV column holding the labels.")
def doctor(server: str, insecure: bool, root_certificates: Path | None,
           node_key: Path, data: str, label_column: str) -> None:
    """Check everything 'fedfleet join' needs, and say how to fix what fails.

    Checks the server is reachable, its certificate chain and name, the clock
    offset against the server, the node key, and that the data loads.

    \b
    Example:
        fedfleet doctor --server fl.example.org:8000 --root-certificates ca.crt \\
            --node-key /etc/fedfleet/node-key --data /data
    """
    from fedfleet.client.doctor import run_checks

    key = None if insecure and not node_key.exists() else node_key
    checks = run_checks(server, insecure, root_certificates, key,
                        NodeData(data_path=data, label_column=label_column))
    for check in checks:
        click.echo(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"      fix: {check.fix}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} check(s) failed: {', '.join(failed)}")
