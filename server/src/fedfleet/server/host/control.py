"""Talk to a SuperLink's Control API: nodes in this process, runs through ``flwr``.

Node registration, listing and revocation go through :mod:`control_api` (Flower's
Control API client in this process, one connection per batch); runs are submitted,
listed and stopped through Flower's own ``flwr`` CLI.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedfleet.server.host.control_api import ControlApiError, ControlSession, KeyInUse
from fedfleet.server.host.fab import toml_value, write_bundle
from fedfleet.server.host.nodekeys import KeyFileError, NodeKey, read_public_key
from fedfleet.shared import process
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.settings import RunSettings, Scalar

CONNECTION = "fedfleet"

DEFAULT_CA = Path("certificates") / "ca.crt"
"""Where 'fedfleet certs' puts the CA by default; admin commands look there."""


def connect(address: str, state_dir: Path, insecure: bool = False,
            root_certificates: Path | None = None) -> Control:
    """Return a Control API client for the SuperLink at ``address``.

    Its ``flwr`` settings live in ``state_dir/cli``. Over TLS without a CA given, it
    trusts ``certificates/ca.crt`` when that file exists, else the system's CAs.
    """
    if not insecure and root_certificates is None and DEFAULT_CA.is_file():
        root_certificates = DEFAULT_CA
    return Control(address, state_dir / "cli", insecure=insecure,
                   root_certificates=root_certificates)


@dataclass(frozen=True)
class Simulation:
    """What a simulation run adds to a submission (see :mod:`fedfleet.server.simulation`)."""

    run_config: Mapping[str, Scalar]
    """The simulation's plan, as run-config entries of the bundle."""
    federation_config: Mapping[str, Scalar]
    """Flower's simulation settings for the run (``flwr run --federation-config``)."""


Outcome = Literal["registered", "already", "refused"]


@dataclass(frozen=True)
class Registration:
    """What became of one key in :meth:`Control.register_nodes`."""

    key: NodeKey
    outcome: Outcome
    node_id: int | None = None
    error: str | None = None
    """Why it was refused: one line naming the file."""

    def line(self) -> str:
        """Return the one line a person reads about this key."""
        name = self.key.name or self.key.path.name
        if self.outcome == "registered":
            return f"{self.key.path}: registered node {self.node_id} as {name}"
        if self.outcome == "already":
            return f"{self.key.path}: already registered ({name})"
        return f"refused {self.error}"


@dataclass(frozen=True)
class Control:
    """A ``flwr`` CLI set up (in its own ``FLWR_HOME``) to reach one SuperLink."""

    address: str
    home: Path
    insecure: bool = True
    root_certificates: Path | None = None
    timeout: float = 60.0

    def configure(self) -> None:
        """Write the CLI's ``config.toml`` with the ``fedfleet`` connection."""
        self.home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{CONNECTION}"', "",
                 f"[superlink.{CONNECTION}]", f'address = "{self.address}"']
        if self.insecure:
            lines.append("insecure = true")
        elif self.root_certificates is not None:
            lines.append(f'root-certificates = "{self.root_certificates.resolve()}"')
        write_atomic(self.home / "config.toml", "\n".join(lines) + "\n")

    def _flwr(self, *args: str) -> dict[str, Any]:
        self.configure()
        cmd = [process.flower_executable("flwr"), *args, "--format", "json"]
        try:
            done = subprocess.run(cmd, env=process.flower_env(self.home),
                                  capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired as err:
            raise FedfleetError(f"the server at {self.address} did not answer "
                                f"'flwr {args[0]}' within {self.timeout:.0f}s") from err
        payload = _last_json(done.stdout)
        if done.returncode != 0 or payload is None or not payload.get("success", False):
            detail = (payload or {}).get("error-message") or done.stderr.strip() \
                or done.stdout.strip()
            if "403 Forbidden" in detail:
                raise FedfleetError(
                    f"{self.address} refused 'flwr {args[0]}' (403): it is a fedfleet "
                    "gateway, which serves devices only; run admin commands on the server "
                    "host, e.g. docker compose exec server fedfleet runs")
            lines = [line for line in detail.splitlines() if line.strip()]
            raise FedfleetError(f"flwr {args[0]} failed against {self.address}: "
                                f"{lines[-1] if lines else 'no output'}")
        return payload

    def submit(self, settings: RunSettings, bundle_dir: Path,
               simulation: Simulation | None = None) -> int:
        """Start a run with ``settings``; return its run ID.

        With ``simulation`` (a SuperLink started with ``--simulation``) the run is a
        simulation bundle with the plan's run-config entries, and the federation's
        simulation settings (``num-supernodes``, ``client-resources-num-cpus``, ...)
        go with it.
        """
        if simulation is None:
            write_bundle(bundle_dir, settings)
            payload = self._flwr("run", str(bundle_dir), CONNECTION)
        else:
            write_bundle(bundle_dir, settings, simulation.run_config)
            federation = " ".join(f"{key}={toml_value(value)}"
                                  for key, value in simulation.federation_config.items())
            payload = self._flwr("run", str(bundle_dir), CONNECTION,
                                 "--federation-config", federation)
        return int(payload["run-id"])

    def runs(self) -> list[dict[str, Any]]:
        """Return every run the SuperLink knows (``flwr ls``)."""
        return list(self._flwr("ls", CONNECTION)["runs"])

    def run(self, run_id: int) -> dict[str, Any]:
        """Return one run's status row."""
        rows = self._flwr("ls", CONNECTION, "--run-id", str(run_id))["runs"]
        if not rows:
            raise FedfleetError(f"the server has no run {run_id}")
        return dict(rows[0])

    def session(self) -> ControlSession:
        """Open one connection to the Control API (close it, or use ``with``)."""
        return ControlSession.open(self.address, self.insecure, self.root_certificates,
                                   self.timeout)

    def register_node(self, public_key: Path, name: str | None = None) -> int:
        """Register a device's public key; return its node ID.

        Raises
        ------
        FedfleetError
            If the key file is not a key, the key is registered already ("Public key
            already in use"), or the SuperLink cannot be reached.
        """
        with self.session() as session:
            return session.register(read_public_key(public_key), name)

    def register_nodes(self, keys: Iterable[NodeKey],
                       on_result: Callable[[Registration], None] | None = None
                       ) -> list[Registration]:
        """Register many keys over one connection; return what became of each.

        A key that is not a key, or that the SuperLink refuses, is ``refused`` (its
        error names the file) and the others go on; a key registered before is
        ``already``. ``on_result`` sees each result as it happens, so a caller can record them
        even if a later one raises.

        Raises
        ------
        FedfleetError
            If the SuperLink cannot be reached: nothing after that key was tried.
        """
        results: list[Registration] = []
        with self.session() as session:
            for key in keys:
                try:
                    node_id = session.register(read_public_key(key.path, key.folder),
                                               key.name)
                    result = Registration(key, "registered", node_id)
                except KeyInUse:
                    result = Registration(key, "already")
                except KeyFileError as err:
                    result = Registration(key, "refused", error=str(err))
                except ControlApiError as err:
                    if err.code is None:  # no answer: every later key would fail too
                        raise
                    result = Registration(key, "refused", error=f"{key.path}: {err}")
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results

    def nodes(self) -> list[dict[str, Any]]:
        """Return the registered nodes with their status (``flwr supernode list``)."""
        with self.session() as session:
            return session.nodes()

    def revoke_node(self, node_id: int) -> None:
        """Unregister a node: it is refused at its next heartbeat."""
        with self.session() as session:
            session.unregister(node_id)

    def stop(self, run_id: int) -> None:
        """Stop a run."""
        self._flwr("stop", str(run_id), CONNECTION)


def _last_json(text: str) -> dict[str, Any] | None:
    """Return the JSON object printed by a ``flwr ... --format json`` call."""
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
            return value if isinstance(value, dict) else None
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None
