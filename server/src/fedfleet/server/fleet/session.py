"""A fleet command's connections: the server's registry, local images, each device's Docker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors

from fedfleet.server.fleet.channels import close_quietly, connect
from fedfleet.server.fleet.common import Fleet, Outcome
from fedfleet.server.fleet.engine import DeviceEngine
from fedfleet.server.fleet.images import LocalImages
from fedfleet.server.fleet.nodes import ContainerRegistry, DirectRegistry, NodeRegistry
from fedfleet.server.fleet.parallel import Job
from fedfleet.server.fleet.specs import DeviceSpec, Endpoint, Inventory
from fedfleet.shared.errors import FedfleetError

LOCAL = Endpoint("local")


def node_registry(inventory: Inventory, state_dir: Path) -> NodeRegistry:
    """Return the server's node registry as the inventory's [server] reaches it."""
    server = inventory.server
    if server.control_container is not None:
        return ContainerRegistry(connect(server.control_docker or LOCAL),
                                 server.control_container)
    assert server.control is not None
    return DirectRegistry(server.control, server.ca, state_dir)


@contextmanager
def open_fleet(inventory: Inventory, state_dir: Path, **options: Any) -> Iterator[Fleet]:
    """Yield the deploy's shared parts (``options``: :class:`Fleet`'s timeouts and flags)."""
    local = LocalImages(lambda timeout: connect(LOCAL, timeout))
    try:
        yield Fleet(server=inventory.server, ca_pem=inventory.server.ca.read_bytes(),
                    registry=node_registry(inventory, state_dir), local=local, **options)
    finally:
        local.close()


def on_device(inventory: Inventory, fleet: Fleet,
              work: Callable[[DeviceEngine], Outcome]) -> Job:
    """Return a job that connects to a device, runs ``work`` and closes the connection."""
    def job(name: str, say: Callable[[str], None]) -> Outcome:
        spec = inventory.devices[name]
        say(f"connecting to {spec.endpoint.url}")
        client = connect(spec.endpoint)
        try:
            return work(DeviceEngine(client, spec, fleet, say))
        finally:
            close_quietly(client)
    return job


def client_container(client: docker.DockerClient, spec: DeviceSpec) -> Any:
    """Return the client container on the device.

    Raises
    ------
    FedfleetError
        If the device has none (not deployed).
    """
    try:
        return client.containers.get(spec.container)
    except docker.errors.NotFound:
        raise FedfleetError(f"device {spec.name} has no client container "
                            f"({spec.container}); run 'fedfleet fleet deploy {spec.name}'"
                            ) from None
