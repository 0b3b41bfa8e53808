"""Start a swarm: N virtual devices split over a few processes, and collect the result.

    keys = make_keys(workdir / "keys", 300)             # NAME and NAME.pub per device
    swarm = Swarm.start(workdir, "https://127.0.0.1:8443", ca, keys,
                        paces, processes=2, cpus=[1], duration_s=600)
    result = swarm.wait()                                # merged SwarmResult

Devices get source addresses 127.0.A.B, ``devices_per_address`` to each (loopback
aliases need no setup on Linux: all of 127.0.0.0/8 is the loopback interface). Each
process runs :mod:`swarm.runner`; it stops by itself at ``duration_s`` and
:meth:`Swarm.wait` kills whatever is left after a grace period.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from swarm.device import Pace

BENCHMARKS = Path(__file__).parents[1]


def _make_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())  # as 'fedfleet node-key' makes them
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    path.with_name(path.name + ".pub").write_bytes(public + b"\n")
    return path


def make_keys(directory: Path, count: int, prefix: str = "swarm") -> list[Path]:
    """Make (or reuse) ``count`` node keys ``directory/PREFIX-NNNN`` and ``.pub``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{prefix}-{i:04d}" for i in range(count)]
    missing = [p for p in paths if not p.exists()]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(_make_key, missing))
    return paths


def source_address(index: int, devices_per_address: int) -> str:
    """Return the loopback source address of device ``index``: 127.0.A.B, B >= 2."""
    slot = index // max(1, devices_per_address)
    return f"127.0.{1 + slot // 250}.{2 + slot % 250}"


@dataclass
class SwarmResult:
    """Every device's log and every request's latency, merged over the processes."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[str, list[list[float]]] = field(default_factory=dict)
    """Route -> [monotonic time answered, seconds] per request."""
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    retries: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    max_rss_mb: float = 0.0
    process_failures: list[str] = field(default_factory=list)

    def merge(self, part: dict[str, Any]) -> None:
        """Add one process's result."""
        self.devices += part["devices"]
        for route, values in part["latencies"].items():
            self.latencies.setdefault(route, []).extend(values)
        for key, count in part["statuses"].items():
            self.statuses[key] = self.statuses.get(key, 0) + count
        self.transport_errors += part["transport_errors"]
        self.retries += part["retries"]
        self.cpu_s += part["cpu_s"]
        self.wall_s = max(self.wall_s, part["wall_s"])
        self.max_rss_mb += part["max_rss_kb"] / 1024

    def requests(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Return how many requests got an answer in a time window."""
        return sum(1 for v in self.latencies.values() for t, _ in v if since <= t < until)

    def latency(self, route: str, since: float = 0.0, until: float = float("inf")
                ) -> dict[str, float | None]:
        """Return p50, p95 and max latency (seconds) of ``route`` in a time window."""
        values = sorted(s for t, s in self.latencies.get(route, []) if since <= t < until)
        if not values:
            return {"p50": None, "p95": None, "max": None, "n": 0}
        return {"p50": statistics.median(values),
                "p95": values[min(len(values) - 1, int(0.95 * len(values)))],
                "max": values[-1], "n": len(values)}

    def activation(self) -> dict[str, float | None]:
        """Return when the first, median and last device got online (seconds)."""
        times = sorted(d["activated_after_s"] for d in self.devices
                       if d["activated_after_s"] is not None)
        return {"online": len(times), "first": times[0] if times else None,
                "median": statistics.median(times) if times else None,
                "last": times[-1] if times else None}


@dataclass
class Swarm:
    """Running swarm processes."""

    procs: list[subprocess.Popen[bytes]]
    outs: list[Path]
    duration_s: float

    @classmethod
    def start(cls, workdir: Path, base_url: str, ca_file: Path, keys: Sequence[Path],
              paces: Sequence[Pace], *, processes: int = 1, cpus: Sequence[int] = (),
              duration_s: float = 300.0, ramp_s: float = 10.0,
              devices_per_address: int = 4, seed: int = 0) -> Swarm:
        """Start ``len(keys)`` devices (``paces[i]`` for device i) in ``processes``."""
        workdir.mkdir(parents=True, exist_ok=True)
        procs, outs = [], []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        for p in range(processes):
            mine = list(range(p, len(keys), processes))
            out = workdir / f"swarm-{p}.result.json"
            out.unlink(missing_ok=True)
            spec = {"base_url": base_url, "ca_file": str(ca_file),
                    "keys": [str(keys[i]) for i in mine],
                    "sources": [source_address(i, devices_per_address) for i in mine],
                    "paces": [asdict(paces[i]) for i in mine],
                    "duration_s": duration_s, "ramp_s": ramp_s, "out": str(out),
                    "cpus": list(cpus), "seed": seed + p * 100_000}
            spec_path = workdir / f"swarm-{p}.spec.json"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            log = (workdir / f"swarm-{p}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "swarm.runner",
                                           str(spec_path)], cwd=BENCHMARKS, env=env,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            outs.append(out)
        return cls(procs, outs, duration_s)

    def pids(self) -> list[int]:
        """Return the swarm processes' PIDs."""
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Ask every process to stop now (they still write their results)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def wait(self, grace_s: float = 60.0) -> SwarmResult:
        """Wait for every process (killing any left ``grace_s`` after the duration)."""
        result = SwarmResult()
        deadline = time.monotonic() + self.duration_s + grace_s
        for proc, out in zip(self.procs, self.outs, strict=True):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                result.process_failures.append(f"pid {proc.pid}: killed after the grace")
            if out.exists():
                result.merge(json.loads(out.read_text(encoding="utf-8")))
            else:
                result.process_failures.append(
                    f"pid {proc.pid}: exit {proc.returncode}, no result "
                    f"(see {out.with_suffix('').with_suffix('.log')})")
        return result

    def kill(self) -> None:
        """Stop every swarm process now."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
