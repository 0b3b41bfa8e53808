"""Taking a device out: container stopped and removed, node revoked, volumes removed."""

from __future__ import annotations

import time
from typing import Any

import docker
import docker.errors

from fedfleet.server.fleet.common import Device, DeviceError, Outcome
from fedfleet.server.fleet.container import node_label
from fedfleet.server.fleet.keys import stored_node_id
from fedfleet.server.fleet.nodes import node_state
from fedfleet.shared.errors import FedfleetError


def remove(device: Device) -> Outcome:
    """Stop and remove the client container, revoke its node, remove its volumes.

    Raises
    ------
    DeviceError
        If the server cannot revoke the node (the key volume is kept for a retry).
    """
    started = time.monotonic()
    spec = device.spec
    done: list[str] = []
    node_id: int | None = None
    container = device.current()
    if container is not None:
        node_id = node_label(container.labels)
        device.say("stopping the container")
        container.stop(timeout=int(spec.drain_timeout) + 10)
        container.remove(force=True)
        done.append("container removed")
    for leftover in (f"{spec.container}-previous", f"{spec.container}-setup"):
        device.remove_quietly(leftover)
    volume = _volume(device, spec.key_volume)
    if node_id is None and volume is not None:
        node_id = stored_node_id(device)
    if node_id is not None:
        try:
            status = node_state(device.fleet.registry, node_id, fresh=True).status
            if status not in (None, "unregistered"):
                device.fleet.registry.revoke(node_id)
                done.append(f"node {node_id} revoked")
            else:
                done.append(f"node {node_id} was not registered")
        except FedfleetError as err:
            raise DeviceError(f"container removed, but revoking node {node_id} failed "
                              f"({err}); the key volume is kept: run remove again"
                              ) from None
    if volume is not None:
        volume.remove(force=True)
        done.append("key volume removed")
    home = _volume(device, spec.home_volume)
    if home is not None:
        home.remove(force=True)
        done.append("home volume removed (with the models the device received)")
    if not done:
        return Outcome(spec.name, True, False, "nothing to remove",
                       time.monotonic() - started)
    return Outcome(spec.name, True, True, "; ".join(done), time.monotonic() - started)


def _volume(device: Device, name: str) -> Any:
    try:
        return device.client.volumes.get(name)
    except docker.errors.NotFound:
        return None
