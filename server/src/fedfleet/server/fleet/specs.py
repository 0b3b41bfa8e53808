"""The fleet's desired state as data: the server, and each device's endpoint and client.

:mod:`.inventory` reads these from ``fleet.toml``; every other module takes them as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.shared.constants import SUPERNODE_PORT
from fedfleet.shared.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    """Client TLS files for a ``tcp://`` Docker endpoint (the daemon runs --tlsverify)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class SshOptions:
    """How the ``ssh`` client reaches an ``ssh://`` endpoint (added to ~/.ssh/config's)."""

    identity: Path | None = None
    known_hosts: Path | None = None
    config: Path | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """A Docker Engine API endpoint: ``ssh://``, ``tcp://`` with TLS, ``unix://`` or local."""

    url: str
    tls: TlsFiles | None = None
    ssh: SshOptions | None = None

    @property
    def scheme(self) -> str:
        """Return ``ssh``, ``tcp``, ``unix`` or ``local``."""
        return self.url.split("://", 1)[0] if "://" in self.url else "local"


@dataclass(frozen=True)
class DeviceSpec:
    """One device as the inventory wants it: where, what data, which image, which limits."""

    name: str
    endpoint: Endpoint
    data: str
    image: str
    source: str = "auto"
    partition: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    cpus: float | None = None
    memory: int | None = None
    min_memory: int = 1 << 30
    network: str = "bridge"
    runtime_port: int = SUPERNODE_PORT
    join_options: tuple[str, ...] = ()
    drain_timeout: float = 120.0
    build_context: Path | None = None

    @property
    def container(self) -> str:
        """Return the client container's name on the device."""
        return f"fedfleet-{self.name}"

    @property
    def key_volume(self) -> str:
        """Return the name of the volume holding the node key, its ID and ca.crt."""
        return f"fedfleet-{self.name}-key"

    @property
    def home_volume(self) -> str:
        """Return the name of the volume holding the device's fedfleet home.

        The node's Flower state and the final models the server sent home live there,
        so they survive an update (a new container).
        """
        return f"fedfleet-{self.name}-home"


@dataclass(frozen=True)
class ServerSpec:
    """The server devices join, and where this machine reaches its Control API."""

    address: str
    ca: Path
    control: str | None = None
    control_container: str | None = None
    control_docker: Endpoint | None = None
    outputs: Path | None = None


@dataclass(frozen=True)
class Inventory:
    """A parsed, checked ``fleet.toml``."""

    path: Path
    server: ServerSpec
    devices: Mapping[str, DeviceSpec]

    def select(self, names: Iterable[str]) -> list[DeviceSpec]:
        """Return the named devices (all when none are named), in inventory order.

        Raises
        ------
        ConfigError
            If a name is not in the inventory.
        """
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.devices]
        if unknown:
            raise ConfigError(f"{self.path}: no device named {', '.join(unknown)} "
                              f"(devices: {', '.join(self.devices) or 'none'})")
        return [d for n, d in self.devices.items() if not wanted or n in wanted]
