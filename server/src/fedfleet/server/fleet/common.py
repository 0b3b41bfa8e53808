"""What the fleet's steps share: the deploy's context, one device at work, its outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from fedfleet.server.fleet.images import LocalImages
from fedfleet.server.fleet.nodes import NodeRegistry
from fedfleet.server.fleet.specs import DeviceSpec, ServerSpec
from fedfleet.shared.errors import FedfleetError


class DeviceError(FedfleetError):
    """The device cannot be brought to its desired state; the message says why."""


@dataclass
class Outcome:
    """How one device ended: ``ok``, whether anything ``changed``, and a summary line."""

    device: str
    ok: bool
    changed: bool
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    """What every device of a deploy shares: the server, its CA, and image sources."""

    server: ServerSpec
    ca_pem: bytes
    registry: NodeRegistry
    local: LocalImages
    build_on_device: bool = False
    ready_timeout: float = 180.0
    idle_timeout: float = 600.0


def _silent(text: str) -> None:
    """Say nothing."""


@dataclass(eq=False)
class Device:
    """One device at work: its daemon's ``client``, its entry, the deploy, a ``say``."""

    client: docker.DockerClient
    spec: DeviceSpec
    fleet: Fleet
    say: Callable[[str], None] = _silent

    def current(self) -> Any:
        """Return the device's client container, or None."""
        try:
            return self.client.containers.get(self.spec.container)
        except docker.errors.NotFound:
            return None

    def remove_quietly(self, name: str) -> None:
        """Remove the container ``name`` on the device if it exists."""
        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

    def revoked(self, node_id: int | str) -> DeviceError:
        """Return the error for a node the server revoked."""
        name = self.spec.name
        return DeviceError(f"node {node_id} of device {name} was revoked on the server; run "
                           f"'fedfleet fleet remove {name}' and deploy again to give it a "
                           "new key")


def short_id(image_id: str) -> str:
    """Return the 12 hex digits of ``sha256:...`` that ``docker images`` shows."""
    return image_id[7:19]


def control_error(err: FedfleetError) -> DeviceError:
    """Return ``err`` of the server's Control API as the device's error."""
    return DeviceError(f"the server's Control API: {err}")
