"""The real server side on this host: ``fedfleet server`` behind the fedfleet gateway.

    stack = Stack.start(StackOptions(workdir, authorized_keys=pub_dir))
    run_id = stack.submit("--rounds", "3", "--fraction-train", "0.1")
    record = stack.wait_run(run_id, timeout=600)
    stack.stop()

``fedfleet server`` (TLS, node auth, ``--authorized-keys``) listens on 127.0.0.1 and the
gateway image (``Dockerfile.gateway``, built if missing) runs in a container on the
host's network in front of it, on its own 127.0.0.1 port, as in compose but without
Docker's port proxy in between: devices keep their own source addresses, so the
gateway's per-address limits see them as in the field. Both can be pinned to CPUs
(``server_cpus``) away from the swarm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from swarm import procs

ROOT = Path(__file__).parents[2]
FEDFLEET = str(Path(sys.executable).parent / "fedfleet")
GATEWAY_IMAGE = f"fedfleet-gateway:{os.environ.get('FEDFLEET_VERSION', '0.1.0')}"
APP_GID = 49999  # the images' group: the gateway (user app) reads the key through it


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackOptions:
    """Where and how the server side runs."""

    workdir: Path
    authorized_keys: Path | None = None
    server_cpus: Sequence[int] = ()
    gateway_env: dict[str, str] = field(default_factory=dict)
    server_env: dict[str, str] = field(default_factory=dict)
    server_args: Sequence[str] = ()
    ready_timeout: float = 900.0


@dataclass
class Stack:
    """A running server and gateway."""

    options: StackOptions
    server: subprocess.Popen[bytes]
    gateway: Any  # docker Container
    server_port: int
    gateway_port: int
    enrolment_s: float
    """``fedfleet server`` start until ready: SuperLink up and every key registered."""

    @property
    def base_url(self) -> str:
        """Return the gateway's URL, as devices use it."""
        return f"https://127.0.0.1:{self.gateway_port}"

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate devices trust."""
        return self.options.workdir / "certs" / "ca.crt"

    @property
    def state_dir(self) -> Path:
        """Return the server's state folder (SuperLink database, logs)."""
        return self.options.workdir / "state"

    @property
    def output_dir(self) -> Path:
        """Return the folder runs write to."""
        return self.options.workdir / "outputs"

    @classmethod
    def start(cls, options: StackOptions) -> Stack:
        """Start the server, wait until ready, then the gateway, and wait until healthy."""
        work = options.workdir
        work.mkdir(parents=True, exist_ok=True)
        certs = work / "certs"
        if not (certs / "server.pem").exists():
            _check([FEDFLEET, "certs", "--out", str(certs)], work)
        secrets = _gateway_secrets(certs, work / "gateway-secrets")
        server_port, gateway_port = free_port(), free_port()
        args = [FEDFLEET, "server", "--host", "127.0.0.1", "--port", str(server_port),
                "--tls-dir", str(certs), "--state-dir", str(work / "state"),
                "--output-dir", str(work / "outputs"), "--no-run", "--no-resume",
                *options.server_args]
        if options.authorized_keys is not None:
            args += ["--authorized-keys", str(options.authorized_keys)]
        cpus = set(options.server_cpus)
        started = time.monotonic()
        server = subprocess.Popen(
            args, cwd=work, stdout=(work / "server.log").open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", **options.server_env},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        gateway = None
        try:
            ready = work / "state" / "ready"
            while not ready.exists():
                if server.poll() is not None:
                    raise RuntimeError(f"fedfleet server exited ({server.returncode}); "
                                       f"see {work / 'server.log'}")
                if time.monotonic() - started > options.ready_timeout:
                    raise RuntimeError("fedfleet server not ready in time")
                time.sleep(0.2)
            enrolment = time.monotonic() - started
            gateway = _start_gateway(secrets, server_port, gateway_port, cpus,
                                     options.gateway_env)
            _wait_gateway(gateway_port, certs / "ca.crt", gateway)
        except BaseException:
            _stop(server, gateway)
            raise
        return cls(options, server, gateway, server_port, gateway_port, enrolment)

    def submit(self, *run_args: str) -> int:
        """Submit a run with ``fedfleet run`` options; return its ID."""
        done = _check([FEDFLEET, "run", "--server", f"127.0.0.1:{self.server_port}",
                       "--root-certificates", str(self.ca_file), "--state-dir",
                       str(self.state_dir), "--output-dir", str(self.output_dir),
                       "--no-follow", *run_args], self.options.workdir)
        for word in done.stdout.split():
            if word.isdigit() and len(word) > 6:
                return int(word)
        raise RuntimeError(f"no run ID in: {done.stdout!r}")

    def record(self, run_id: int) -> dict[str, Any] | None:
        """Return the run's record (metrics.json) as it is now, or None."""
        path = self.output_dir / f"run-{run_id}" / "metrics.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            return None

    def wait_run(self, run_id: int, timeout: float) -> dict[str, Any]:
        """Wait until the run's record says it ended; return it.

        Raises
        ------
        TimeoutError
            If it did not end in ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record(run_id)
            if record is not None and record.get("status") not in (None, "running"):
                return record
            if self.server.poll() is not None:
                raise RuntimeError(f"fedfleet server exited ({self.server.returncode})")
            time.sleep(1.0)
        raise TimeoutError(f"run {run_id} did not end within {timeout:.0f}s")

    def nodes(self) -> list[dict[str, Any]]:
        """Return the SuperLink's node list (``fedfleet nodes list``)."""
        done = _check([FEDFLEET, "nodes", "list", "--format", "json", "--server",
                       f"127.0.0.1:{self.server_port}", "--root-certificates",
                       str(self.ca_file), "--state-dir", str(self.state_dir)],
                      self.options.workdir)
        return list(json.loads(done.stdout))

    def server_roles(self) -> dict[str, list[int]]:
        """Return the server's processes by role (superlink, serverapp, ...)."""
        return procs.roles(self.server.pid)

    def gateway_pids(self) -> list[int]:
        """Return the gateway container's processes."""
        self.gateway.reload()
        pid = int(self.gateway.attrs["State"]["Pid"])
        return [pid, *procs.children(pid)] if pid else []

    def database_bytes(self) -> int:
        """Return the size of the SuperLink's SQLite database (with -wal and -shm)."""
        return sum(p.stat().st_size for p in self.state_dir.glob("superlink.db*"))

    def stop(self) -> None:
        """Stop the gateway and the server (and everything the server started)."""
        _stop(self.server, self.gateway)


def _check(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr[-800:]}")
    return done


def _gateway_secrets(certs: Path, out: Path) -> Path:
    """Copy what the gateway needs, readable by the images' group (as secrets-init does)."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o750)
    for name in ("ca.crt", "server.pem", "server.key"):
        shutil.copyfile(certs / name, out / name)
        os.chmod(out / name, 0o640)
        if os.geteuid() == 0:
            os.chown(out / name, 0, APP_GID)
    if os.geteuid() == 0:
        os.chown(out, 0, APP_GID)
    return out


def _ensure_image(client: Any) -> None:
    try:
        client.images.get(GATEWAY_IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["docker", "build", "-q", "-f", "Dockerfile.gateway", "-t",
                        GATEWAY_IMAGE, "."], cwd=ROOT, check=True, capture_output=True)


def _start_gateway(secrets: Path, server_port: int, gateway_port: int, cpus: set[int],
                   extra_env: dict[str, str]) -> Any:
    client = docker.from_env()
    _ensure_image(client)
    env = {"FEDFLEET_GATEWAY_UPSTREAM": f"127.0.0.1:{server_port}",
           "FEDFLEET_GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}", **extra_env}
    return client.containers.run(
        GATEWAY_IMAGE, detach=True, name=f"fedfleet-swarm-gateway-{uuid.uuid4().hex[:8]}",
        network_mode="host", environment=env, init=True,
        volumes={str(secrets): {"bind": "/run/secrets/fedfleet", "mode": "ro"}},
        cpuset_cpus=",".join(map(str, sorted(cpus))) if cpus else None,
        labels={"fedfleet.test": "swarm"})


def _wait_gateway(port: int, ca: Path, container: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"https://127.0.0.1:{port}/health", verify=str(ca),
                         timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status == "exited":
            raise RuntimeError("gateway exited: " + container.logs(tail=20).decode())
        time.sleep(0.5)
    raise RuntimeError("gateway not healthy in time")


def _stop(server: subprocess.Popen[bytes], gateway: Any) -> None:
    if gateway is not None:
        try:
            gateway.remove(force=True)
        except docker.errors.APIError:
            pass
    if server.poll() is None:
        import signal

        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
