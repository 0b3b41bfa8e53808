"""Talk to a SuperLink's Control API through Flower's own ``flwr`` CLI."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfleet.server.fab import write_bundle
from fedfleet.shared import process
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.settings import RunSettings

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

    def submit(self, settings: RunSettings, bundle_dir: Path) -> int:
        """Start a run with ``settings``; return its run ID."""
        write_bundle(bundle_dir, settings)
        payload = self._flwr("run", str(bundle_dir), CONNECTION)
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

    def register_node(self, public_key: Path, name: str | None = None) -> int:
        """Register a device's public key; return its node ID."""
        args = ["supernode", "register", str(public_key), CONNECTION]
        if name:
            args += ["--name", name]
        return int(self._flwr(*args)["node-id"])

    def nodes(self) -> list[dict[str, Any]]:
        """Return the registered nodes with their status."""
        return list(self._flwr("supernode", "list", CONNECTION)["nodes"])

    def revoke_node(self, node_id: int) -> None:
        """Unregister a node: it is refused at its next heartbeat."""
        self._flwr("supernode", "unregister", str(node_id), CONNECTION)

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
