"""The server side of a deploy: register, list and revoke node keys; each node's state.

Two ways to reach the SuperLink's Control API, as the inventory's [server] says:

- ``control = "127.0.0.1:8000"``: directly, as ``fedfleet nodes`` does on a bare-metal
  server host (Flower's Control API client in this process, over TLS with the
  inventory's CA, one kept-alive connection for the whole deploy);
- ``control_container = "fedfleet-server-1"``: by running ``fedfleet nodes ...`` inside
  the server container through the Docker API (compose keeps the SuperLink on an
  internal network, so this is the only way in from the host).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors

from fedfleet.server.host.control import Control
from fedfleet.server.host.control_api import ControlApiError, ControlSession
from fedfleet.server.host.nodekeys import parse_public_key
from fedfleet.shared.errors import FedfleetError

NODES_TTL = 2.0
"""Seconds a node list is reused: parallel devices share one Control API call."""


class RegistryError(FedfleetError):
    """The server's Control API refused or could not be reached."""


class NodeRegistry(Protocol):
    """What the fleet engine needs from the server."""

    def register(self, public_key: str, name: str) -> int:
        """Register ``public_key``; return the node ID."""

    def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
        """Return registered nodes by ID (``status``: online, offline, registered...)."""

    def revoke(self, node_id: int) -> None:
        """Unregister a node."""


@dataclass(frozen=True)
class NodeState:
    """One node as the server sees it; ``status`` None: the server does not know it."""

    node_id: int
    status: str | None
    online_at: str | None = None

    @property
    def revoked(self) -> bool:
        """Tell whether the node was unregistered on the server."""
        return self.status == "unregistered"


def node_state(registry: NodeRegistry, node_id: int, fresh: bool = False) -> NodeState:
    """Return ``node_id``'s state in ``registry`` (a list shared for a moment unless ``fresh``)."""
    return state_in(registry.nodes(fresh=fresh), node_id)


def state_in(nodes: dict[int, dict[str, Any]], node_id: int) -> NodeState:
    """Return ``node_id``'s state in a node list from :meth:`NodeRegistry.nodes`."""
    row = nodes.get(node_id)
    if row is None:
        return NodeState(node_id, None)
    status, online = row.get("status"), row.get("online-at")
    return NodeState(node_id, None if status is None else str(status),
                     None if online is None else str(online))


class _Cached:
    """Serialises Control API calls and shares node lists between devices for a moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[int, dict[str, Any]] | None = None
        self._at = 0.0

    def _cached_nodes(self, fetch: Callable[[], list[dict[str, Any]]], fresh: bool
                      ) -> dict[int, dict[str, Any]]:
        with self._lock:
            if fresh or self._nodes is None or time.monotonic() - self._at > NODES_TTL:
                self._nodes = {int(row["node-id"]): row for row in fetch()}
                self._at = time.monotonic()
            return dict(self._nodes)

    def _forget(self) -> None:
        self._nodes = None


class DirectRegistry(_Cached):
    """The Control API at ``address`` (TLS with ``ca``), over one kept-alive connection."""

    def __init__(self, address: str, ca: Path, state_dir: Path) -> None:
        """Reach ``address``, trusting ``ca``; ``state_dir`` is kept for the CLI."""
        super().__init__()
        self.state_dir = state_dir
        self.control = Control(address, state_dir / "cli", insecure=False,
                               root_certificates=ca)
        self._session: ControlSession | None = None

    def _call(self, call: Callable[[ControlSession], Any]) -> Any:
        """Run ``call`` on the open session (opening it first); errors as RegistryError."""
        if self._session is None:
            self._session = self.control.session()
        try:
            return call(self._session)
        except ControlApiError as err:
            raise RegistryError(str(err)) from None

    def register(self, public_key: str, name: str) -> int:
        """Register ``public_key`` under ``name``; return the node ID."""
        with self._lock:
            try:
                key = parse_public_key(public_key.encode(), f"the key of device {name}")
            except FedfleetError as err:
                raise RegistryError(str(err)) from None
            node_id = int(self._call(lambda session: session.register(key, name)))
            self._forget()
            return node_id

    def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
        """Return the registered nodes by ID."""
        def fetch() -> list[dict[str, Any]]:
            return list(self._call(lambda session: session.nodes()))
        return self._cached_nodes(fetch, fresh)

    def revoke(self, node_id: int) -> None:
        """Unregister ``node_id``."""
        with self._lock:
            self._call(lambda session: session.unregister(node_id))
            self._forget()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


class ContainerRegistry(_Cached):
    """``fedfleet nodes ...`` run inside the server container ``name`` via ``docker exec``."""

    def __init__(self, client: docker.DockerClient, name: str) -> None:
        """Use the container ``name`` on the daemon ``client`` talks to."""
        super().__init__()
        self.client = client
        self.name = name

    def _container(self) -> Any:
        try:
            container = self.client.containers.get(self.name)
        except docker.errors.NotFound:
            raise RegistryError(f"no server container {self.name!r} (control_container in "
                                "the inventory; 'docker compose ps' shows its name)") from None
        if container.status != "running":
            raise RegistryError(f"the server container {self.name} is {container.status}")
        return container

    def _exec(self, *args: str) -> str:
        result = self._container().exec_run(["fedfleet", "nodes", *args], demux=True)
        out = (result.output[0] or b"").decode(errors="replace")
        err = (result.output[1] or b"").decode(errors="replace")
        if result.exit_code != 0:
            lines = [line for line in (err or out).splitlines() if line.strip()]
            raise RegistryError(f"in the server container {self.name}: "
                                f"{lines[-1] if lines else 'fedfleet nodes failed'}")
        return out

    def register(self, public_key: str, name: str) -> int:
        """Copy ``public_key`` into the container and register it there."""
        with self._lock:
            data = (public_key.strip() + "\n").encode()
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo(f"fleet-{name}.pub")
                info.size, info.mode, info.uid, info.gid = len(data), 0o644, 49999, 49999
                tar.addfile(info, io.BytesIO(data))
            self._container().put_archive("/tmp", buffer.getvalue())
            out = self._exec("register", f"/tmp/fleet-{name}.pub", "--name", name)
            self._forget()
        if "already registered" in out:
            raise RegistryError(f"in the server container {self.name}: the key of "
                                f"{name} is already in use")
        match = re.search(r"registered node (\d+)", out)
        if match is None:
            raise RegistryError(f"in the server container {self.name}: unexpected answer "
                                f"{out.strip()[:200]!r}")
        return int(match.group(1))

    def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
        """Return the registered nodes by ID."""
        def fetch() -> list[dict[str, Any]]:
            rows = json.loads(self._exec("list", "--format", "json"))
            return list(rows)
        return self._cached_nodes(fetch, fresh)

    def revoke(self, node_id: int) -> None:
        """Unregister ``node_id``."""
        with self._lock:
            self._exec("revoke", str(node_id))
            self._forget()
