"""Step 5: switch the device to the new client container, or put the old one back.

The old container is switched only while the device is idle; the new one must become
healthy and newly online on the server within a bounded time. If it does not, it is
removed and the old container (renamed aside, its image tagged ``fedfleet-previous``)
is started again.
"""

from __future__ import annotations

import time
from typing import Any

import docker
import docker.errors
import requests

from fedfleet.server.fleet.activity import describe, read_activity
from fedfleet.server.fleet.common import Device, DeviceError, short_id
from fedfleet.server.fleet.container import PREVIOUS_TAG, split_config
from fedfleet.server.fleet.images import split_ref
from fedfleet.server.fleet.nodes import node_state
from fedfleet.shared.errors import FedfleetError

POLL = 2.0
"""Seconds between looks at a starting container."""


def switch(device: Device, current: Any, config: dict[str, Any], node_id: int | None) -> None:
    """Replace ``current`` by a container made from ``config``; roll back on failure.

    Raises
    ------
    DeviceError
        The device stayed busy, or the new container failed its gate (then ``current``
        runs again and the message says so).
    """
    name = device.spec.container
    before = None
    if node_id is not None:
        before = node_state(device.fleet.registry, node_id, fresh=True).online_at
    previous_name = f"{name}-previous"
    device.remove_quietly(previous_name)
    if current is not None:
        if current.status == "running":
            wait_idle(device, current)
        _keep_previous_image(device, current)
        current.rename(previous_name)
        device.say("stopping the old container")
        current.stop(timeout=int(device.spec.drain_timeout) + 10)
    new = None
    try:
        new = create(device, config)
        new.start()
        device.say("started; waiting until healthy and online")
        wait_ready(device, new, node_id, before)
    except (FedfleetError, docker.errors.APIError,
            requests.exceptions.RequestException) as err:
        reason = _why(err)
        if current is None:
            _remove_new(new)
            raise DeviceError(reason) from None
        try:
            _remove_new(new)
            current.rename(name)
            current.start()
        except (docker.errors.APIError, requests.exceptions.RequestException) as again:
            raise DeviceError(
                f"{reason}; the rollback failed too ({_why(again)}): the previous "
                f"container is {previous_name}; run the update again") from None
        raise DeviceError(f"{reason}; rolled back to the previous container "
                          f"({short_id(current.image.id)})") from None
    if current is not None:
        current.remove(force=True)


def _why(err: BaseException) -> str:
    """Return why a switch failed, in one line, whichever layer said so."""
    if isinstance(err, FedfleetError):
        return str(err)
    if isinstance(err, docker.errors.APIError):
        return f"the device refused the container: {err.explanation or err}"
    return f"the connection to the device broke: {err}"


def _remove_new(new: Any) -> None:
    """Remove the new container, if it was created."""
    if new is not None:
        new.remove(force=True)


def create(device: Device, config: dict[str, Any]) -> Any:
    """Create the container (low-level API: the high-level one drops stop_timeout)."""
    api = device.client.api
    host, params = split_config(config)
    created = api.create_container(host_config=api.create_host_config(**host), **params)
    return device.client.containers.get(created["Id"])


def _keep_previous_image(device: Device, current: Any) -> None:
    repo, _ = split_ref(device.spec.image)
    try:
        device.client.api.tag(current.image.id, repo, PREVIOUS_TAG)
    except docker.errors.APIError:
        pass


def wait_idle(device: Device, container: Any, timeout: float | None = None) -> None:
    """Wait until the device is not answering a message.

    Raises
    ------
    DeviceError
        If it is still busy after ``timeout`` seconds.
    """
    timeout = device.fleet.idle_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    said = False
    while True:
        state = read_activity(container)
        if state is None:
            device.say("cannot read the client's activity (an older image?); switching")
            return
        if state.get("state") != "busy":
            return
        where = describe(state)
        if time.monotonic() > deadline:
            raise DeviceError(f"still answering {where} after {timeout:.0f}s; not "
                              "switched (try again between rounds)")
        if not said:
            device.say(f"waiting for the device to answer {where}")
            said = True
        time.sleep(0.5)


def wait_ready(device: Device, container: Any, node_id: int | None, before: str | None,
               timeout: float | None = None) -> None:
    """Wait until ``container`` is healthy and its node is online (newly).

    Raises
    ------
    DeviceError
        If it exits, restarts, turns unhealthy, or is not online within ``timeout``.
    """
    timeout = device.fleet.ready_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    health, node_status = "starting", "unknown"
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        health = state.get("Health", {}).get("Status", "none")
        if state.get("Status") in ("exited", "dead") or container.attrs.get(
                "RestartCount", 0) > 0 or state.get("Restarting"):
            raise DeviceError(f"the client container stopped: {last_error(container)}")
        if health == "unhealthy":
            raise DeviceError(f"the client container is unhealthy: {last_error(container)}")
        if health == "healthy":
            if node_id is None:
                return
            node = node_state(device.fleet.registry, node_id, fresh=True)
            node_status = node.status or "not registered"
            if node_status == "online" and node.online_at != before:
                return
        time.sleep(POLL)
    raise DeviceError(f"not healthy and online within {timeout:.0f}s (container "
                      f"{health}, node {node_id} {node_status}): {last_error(container)}")


def last_error(container: Any) -> str:
    """Return the container's last error line (or last line) for a message."""
    try:
        lines = container.logs(tail=50).decode(errors="replace").splitlines()
    except docker.errors.APIError:
        return "no logs"
    errors = [line for line in lines if line.startswith("Error:") or "ERROR" in line]
    chosen = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
    return f"last log line: {chosen.strip()[:300]}"
