"""``fedfleet fleet``: deploy, watch, update and remove the clients on devices. Parsing only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import docker.errors
import requests

from fedfleet.server.fleet.channels import close_quietly, connect
from fedfleet.server.fleet.common import Outcome
from fedfleet.server.fleet.inventory import load_inventory
from fedfleet.server.fleet.parallel import Board, run_all
from fedfleet.server.fleet.removal import remove
from fedfleet.server.fleet.rollout import rollout, summary
from fedfleet.server.fleet.session import client_container, on_device, open_fleet
from fedfleet.server.fleet.specs import DeviceSpec
from fedfleet.server.fleet.status import gather, render
from fedfleet.shared.errors import FedfleetError

F = TypeVar("F", bound=Callable[..., Any])


def _common(func: F) -> F:
    """Add --inventory and --state-dir (also read from FEDFLEET_FLEET_INVENTORY)."""
    name = func.__name__.removeprefix("fleet_").upper()
    for option in reversed([
        click.option("-i", "--inventory", type=click.Path(dir_okay=False, path_type=Path),
                     default=Path("fleet.toml"), show_default=True,
                     envvar=[f"FEDFLEET_FLEET_{name}_INVENTORY", "FEDFLEET_FLEET_INVENTORY"],
                     help="The fleet inventory (also FEDFLEET_FLEET_INVENTORY)."),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=Path("fedfleet-state"), show_default=True,
                     help="Where the Control API client keeps its settings."),
    ]):
        func = option(func)
    return func


def _finish(outcomes: Sequence[Outcome], verb: str) -> None:
    line, failure = summary(outcomes, verb)
    click.echo(line)
    if failure is not None:
        raise click.ClickException(failure)


@click.group("fleet")
def fleet() -> None:
    """Deploy, watch and update the clients on your devices through their Docker API.

    The devices, the server they join and the image they run are listed in an
    inventory, fleet.toml (see README: Deploy to your devices). Each device's
    Docker Engine API is reached over ssh://, tcp:// with TLS client certificates,
    or a local socket.

    \b
    Example:
        fedfleet fleet deploy
        fedfleet fleet status --watch
        fedfleet fleet update --batch 2
        fedfleet fleet logs edge-1 --follow
        fedfleet fleet exec edge-1 -- doctor
        fedfleet fleet remove edge-3 --yes
    """


@fleet.command("deploy")
@click.argument("names", nargs=-1)
@_common
@click.option("--build-on-device", is_flag=True,
              help="Build the image on each device from build_context (native arch).")
@click.option("--parallel", type=click.IntRange(min=1), default=4, show_default=True,
              help="Devices handled at once.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=180.0,
              show_default=True,
              help="Seconds a new container has to become healthy and online.")
def fleet_deploy(names: tuple[str, ...], inventory: Path, state_dir: Path,
                 build_on_device: bool, parallel: int, ready_timeout: float) -> None:
    """Put the client on each device (all, or the NAMES given) and start it.

    Per device: check its Docker (OS, architecture, memory, disk), bring the image
    (from a registry, streamed from this machine, or built there), make the node key
    on the device (the private key never leaves it), register it with the server,
    and run the client container. A device that is already as the inventory says
    is left alone; a failing device does not stop the others.

    \b
    Example:
        fedfleet fleet deploy
        fedfleet fleet deploy edge-1 edge-2 --inventory lab.toml
        fedfleet fleet deploy pi-4 --build-on-device
    """
    inv = load_inventory(inventory)
    devices = [d.name for d in inv.select(names)]
    with open_fleet(inv, state_dir, build_on_device=build_on_device,
                    ready_timeout=ready_timeout) as ctx:
        outcomes = run_all(devices, on_device(inv, ctx, lambda e: e.apply()), parallel,
                           Board(devices))
    _finish(outcomes, "deployed")


@fleet.command("update")
@click.argument("names", nargs=-1)
@_common
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Devices switched at a time.")
@click.option("--build-on-device", is_flag=True,
              help="Build the new image on each device from build_context.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=600.0,
              show_default=True,
              help="Seconds to wait for a device to finish the message it is answering.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=180.0,
              show_default=True,
              help="Seconds the new container has to become healthy and online, else "
                   "it is rolled back.")
def fleet_update(names: tuple[str, ...], inventory: Path, state_dir: Path, batch: int,
                 build_on_device: bool, idle_timeout: float, ready_timeout: float) -> None:
    """Roll the inventory's image out, --batch devices at a time.

    Each device gets the new image while it keeps training; its container is
    switched only between messages (no reply is lost) and keeps its key volume, so
    it rejoins as the same node. The next device starts only once this one is
    healthy and online; one that is not within --ready-timeout goes back to its
    previous container and image (kept, tagged fedfleet-previous), and the rollout
    stops there.

    \b
    Example:
        fedfleet fleet update
        fedfleet fleet update --batch 3 --ready-timeout 300
    """
    inv = load_inventory(inventory)
    devices = [d.name for d in inv.select(names)]
    with open_fleet(inv, state_dir, build_on_device=build_on_device,
                    ready_timeout=ready_timeout, idle_timeout=idle_timeout) as ctx:
        outcomes = rollout(devices, on_device(inv, ctx, lambda e: e.apply()), batch,
                           Board(devices))
    _finish(outcomes, "up to date")


@fleet.command("status")
@click.argument("names", nargs=-1)
@_common
@click.option("--format", "format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds (Ctrl-C ends).")
@click.option("--interval", type=click.FloatRange(min=1), default=5.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--parallel", type=click.IntRange(min=1), default=8, show_default=True,
              help="Devices asked at once.")
def fleet_status(names: tuple[str, ...], inventory: Path, state_dir: Path, format: str,
                 watch: bool, interval: float, parallel: int) -> None:
    """Show each device: container, health, image, node, online, last round, uptime.

    LAST ROUND comes from the run records in the server's output directory
    ([server] outputs in the inventory); ROUNDS is contributed/asked: the train
    rounds of the newest run that asked the device, and how many of them its update
    went into. ACTIVITY says whether the device is answering a message right now.

    \b
    Example:
        fedfleet fleet status
        fedfleet fleet status --watch --interval 2
        fedfleet fleet status edge-1 --format json
    """
    inv = load_inventory(inventory)
    devices = [d.name for d in inv.select(names)]
    live = sys.stdout.isatty()
    with open_fleet(inv, state_dir) as ctx:
        while True:
            text = render(gather(inv, ctx, devices, parallel), format)
            if watch and live:
                click.echo("\x1b[H\x1b[2J", nl=False)
            if watch:
                click.echo(time.strftime("%H:%M:%S"))
            click.echo(text)
            if not watch:
                break
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                break


def _one_device(inventory: Path, name: str) -> DeviceSpec:
    return load_inventory(inventory).select([name])[0]


DOCKER_FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException)
"""What the device's daemon or the connection to it raise while a command talks to it."""


def _docker_failed(name: str, err: Exception) -> FedfleetError:
    """Return the one-line error for a Docker call on device ``name`` that failed."""
    text = str(getattr(err, "explanation", None) or err).strip()
    return FedfleetError(f"device {name}: its Docker failed ({type(err).__name__}): {text}")


@fleet.command("logs")
@click.argument("name")
@_common
@click.option("--follow", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option("--tail", type=click.IntRange(min=0), default=100, show_default=True,
              help="Lines from the end to start with.")
def fleet_logs(name: str, inventory: Path, state_dir: Path, follow: bool, tail: int) -> None:
    """Print the client container's log on device NAME.

    \b
    Example:
        fedfleet fleet logs edge-1 --tail 20
        fedfleet fleet logs edge-1 --follow
    """
    spec = _one_device(inventory, name)
    client = connect(spec.endpoint)
    try:
        container = client_container(client, spec)
        out = sys.stdout.buffer
        if not follow:
            out.write(container.logs(tail=tail))
            return
        try:
            for chunk in container.logs(stream=True, follow=True, tail=tail):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:
            pass
    except DOCKER_FAILURES as err:
        raise _docker_failed(name, err) from None
    finally:
        close_quietly(client)


@fleet.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
@_common
def fleet_exec(name: str, args: tuple[str, ...], inventory: Path, state_dir: Path) -> None:
    """Run a fedfleet command (ARGS) inside the client container on device NAME.

    The container's settings (server, CA, node key, data) are filled in, so
    'doctor' needs no options. The exit code is the command's.

    \b
    Example:
        fedfleet fleet exec edge-1 -- doctor
        fedfleet fleet exec edge-1 -- data /data
    """
    spec = _one_device(inventory, name)
    client = connect(spec.endpoint)
    try:
        container = client_container(client, spec)
        if container.status != "running":
            raise FedfleetError(f"the client container on {name} is {container.status}; "
                                f"see 'fedfleet fleet logs {name}'")
        result = container.exec_run(["fedfleet", *args], demux=True)
    except DOCKER_FAILURES as failure:
        raise _docker_failed(name, failure) from None
    finally:
        close_quietly(client)
    out, err = result.output
    sys.stdout.buffer.write(out or b"")
    sys.stdout.flush()
    sys.stderr.buffer.write(err or b"")
    sys.exit(result.exit_code or 0)


@fleet.command("remove")
@click.argument("names", nargs=-1, required=True)
@_common
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def fleet_remove(names: tuple[str, ...], inventory: Path, state_dir: Path, yes: bool) -> None:
    """Take devices out: container and key volume removed, node revoked on the server.

    The device's key is destroyed; deploying it again makes a new key and node.
    Images stay on the device.

    \b
    Example:
        fedfleet fleet remove edge-3
        fedfleet fleet remove edge-3 edge-4 --yes
    """
    inv = load_inventory(inventory)
    devices = [d.name for d in inv.select(names)]
    if not yes:
        click.confirm(f"Remove {', '.join(devices)} (container, node key, registration)?",
                      abort=True)
    with open_fleet(inv, state_dir) as ctx:
        outcomes = run_all(devices, on_device(inv, ctx, remove), 4, Board(devices))
    _finish(outcomes, "removed")
