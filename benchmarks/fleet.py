"""Run fedfleet and the reference app on 127.0.0.1 and collect what the benchmark reports.

Both sides run as real processes: fedfleet through its own CLI (`fedfleet server` and
`fedfleet join`), the reference through its harness `run_baseline.sh` from the team's
shared folder. Everything started here is stopped before a function returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from ports import free_port  # re-exported for robustness.py

from fedfleet.shared.runrecord import read_record

VENV_BIN = Path(sys.executable).parent
FEDFLEET = str(VENV_BIN / "fedfleet")
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
         "TF_CPP_MIN_LOG_LEVEL": "3"}


@dataclass
class Scenario:
    """One run's shape: clients, rounds and the training settings both sides share."""

    clients: int = 3
    rounds: int = 6
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.005
    partitioning: str = "iid"
    compression: str = "none"
    target_accuracy: float = 0.90




def _status_mb(pid: int, key: str) -> float | None:
    """Return a memory field of /proc/PID/status (``VmHWM``, ``VmRSS``) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            kids = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found.append(kid)
            todo.append(kid)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _role(cmd: str) -> str:
    for marker, role in (("flower-supernode", "supernode"), ("flower-superexec", "superexec"),
                         ("fedfleet.client.worker", "trainer"), ("clientapp", "clientapp"),
                         ("fedfleet join", "join")):
        if marker in cmd:
            return role
    return "other"


def supernodes() -> list[int]:
    """PIDs of every running ``flower-supernode`` (the reference's devices)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "flower-supernode" in _cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


class EdgeSampler(threading.Thread):
    """Sample the resident memory of each device's whole process tree, 10 times a second.

    A device is a root process (``fedfleet join``, or the reference's SuperNode) and
    everything below it, including each short-lived ClientApp. Both sides are measured
    by this same code, so their figures compare.
    """

    def __init__(self, roots: Callable[[], list[int]], interval: float = 0.1) -> None:
        """Sample the trees of the PIDs ``roots()`` returns, until :meth:`stop`."""
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.samples: list[tuple[float, int, dict[str, float]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        """Take samples until stopped."""
        while not self._halt.wait(self.interval):
            now = time.time()
            for root in self.roots():
                roles: dict[str, float] = {}
                for pid in [root, *_descendants(root)]:
                    role = _role(_cmdline(pid))
                    roles[role] = roles.get(role, 0.0) + (_status_mb(pid, "VmRSS") or 0.0)
                self.samples.append((now, root, roles))

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        self.join(timeout=5)

    def peak(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """Return the highest per-device total in [start, end] and each role's peak."""
        window = [(sum(roles.values()), roles) for t, _, roles in self.samples
                  if start <= t <= end]
        if not window:
            return 0.0, {}
        roles_peak: dict[str, float] = {}
        for _, roles in window:
            for role, mb in roles.items():
                roles_peak[role] = max(roles_peak.get(role, 0.0), mb)
        return max(total for total, _ in window), roles_peak


def edge_daemons_mb(join_pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) of one device's long-lived processes, by role."""
    roles = {"join": _status_mb(join_pid, "VmHWM") or 0.0}
    for pid in _descendants(join_pid):
        cmd = _cmdline(pid)
        role = ("supernode" if "flower-supernode" in cmd else
                "superexec" if "flower-superexec" in cmd else
                "trainer" if "fedfleet.client.worker" in cmd else None)
        if role:
            roles[role] = max(roles.get(role, 0.0), _status_mb(pid, "VmHWM") or 0.0)
    return roles


def run_traffic(state_db: Path) -> int:
    """Bytes the SuperLink sent plus received for the (single) run in ``state_db``."""
    with sqlite3.connect(state_db) as db:
        row = db.execute("SELECT SUM(bytes_sent + bytes_recv) FROM run").fetchone()
    return int(row[0] or 0)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_line(log: Path, text: str, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if log.exists() and text in log.read_text(errors="replace"):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _median_after_first(values: list[float]) -> float | None:
    rest = values[1:] or values
    return statistics.median(rest) if rest else None


def _time_to_target(starts_ends: list[tuple[float, float | None]], t0: float,
                    target: float) -> float | None:
    for end, accuracy in starts_ends:
        if accuracy is not None and accuracy >= target:
            return end - t0
    return None


def run_fedfleet(sc: Scenario, timeout: float = 1800) -> dict[str, Any]:
    """Run fedfleet once (server + ``sc.clients`` joins); return the measurements."""
    work = Path(tempfile.mkdtemp(prefix="fedfleet-bench-"))
    env = {**os.environ, **QUIET}
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    joins: list[subprocess.Popen[bytes]] = []
    sampler = EdgeSampler(lambda: [j.pid for j in joins])

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([FEDFLEET, *args], cwd=work, env=env,
                                stdout=(work / f"{name}.log").open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        server = start("server", "server", "--insecure", "--port", str(port),
                       "--rounds", str(sc.rounds), "--min-clients", str(sc.clients),
                       "--local-epochs", str(sc.local_epochs),
                       "--batch-size", str(sc.batch_size),
                       "--learning-rate", str(sc.learning_rate),
                       "--partitioning", sc.partitioning,
                       "--compression", sc.compression,
                       "--exit-when-done", "--state-dir", "state", "--output-dir", "out")
        if _wait_for_line(work / "server.log", "waiting for", 120) is None:
            raise RuntimeError(f"server did not start: {(work / 'server.log').read_text()}")
        starts = []
        sampler.start()
        for i in range(sc.clients):
            joins.append(start(f"client{i}", "join", "--insecure", "--server",
                               f"127.0.0.1:{port}", "--partition", f"{i}/{sc.clients}",
                               "--runtime-port", str(free_port()), "--home", f"c{i}"))
        for i in range(sc.clients):
            starts.append(_wait_for_line(work / f"client{i}.log", "SuperNode ID", 120))
        memory: list[dict[str, float]] = []
        deadline = time.monotonic() + timeout
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
            if any((work / "out").glob("run-*/metrics.json")):
                memory = [edge_daemons_mb(j.pid) for j in joins]
        sampler.stop()
        if server.returncode != 0:
            raise RuntimeError(f"fedfleet run failed:\n{(work / 'server.log').read_text()}")
        (run_dir,) = (work / "out").glob("run-*")
        record = read_record(run_dir)
        if record is None:
            raise RuntimeError(f"no run record in {run_dir}")
        rounds = record["rounds"]
        steady = rounds[1:] or rounds
        round_peak, round_roles = sampler.peak(
            steady[0]["started_at"], steady[-1]["started_at"] + steady[-1]["wall_s"])
        model_bytes = record["run"]["model_bytes"]
        walls = [r["wall_s"] for r in rounds]
        overheads = [r["wall_s"] - (r.get("max_client_train_s") or 0.0) for r in rounds]
        devices = [c.get("device", {}) for r in rounds for c in r.get("clients", [])]
        clientapp_peak = max((d.get("clientapp_peak_rss_mb", 0.0) for d in devices),
                             default=0.0)
        per_device = [sum(m.values()) + clientapp_peak for m in memory] or [0.0]
        t0 = rounds[0]["started_at"]
        return {
            "rounds": [{k: r.get(k) for k in ("round", "wall_s", "max_client_train_s",
                                              "central_accuracy", "train_replies")}
                       for r in rounds],
            "median_overhead_s": _median_after_first(overheads),
            "median_round_s": _median_after_first(walls),
            "final_accuracy": rounds[-1].get("central_accuracy"),
            "time_to_target_s": _time_to_target(
                [(r["started_at"] + r["wall_s"], r.get("central_accuracy")) for r in rounds],
                t0, sc.target_accuracy),
            "wire_ratio": run_traffic(work / "state" / "superlink.db")
            / (sc.rounds * sc.clients) / (2 * model_bytes),
            "model_bytes": model_bytes,
            "edge_peak_mb": max(per_device),
            "edge_processes_mb": {**memory[0], "clientapp": clientapp_peak} if memory else {},
            "edge_round_peak_mb": round_peak,
            "edge_round_processes_mb": round_roles,
            "client_start_s": max((s for s in starts if s is not None), default=None),
        }
    finally:
        for proc in reversed(procs):
            _stop_group(proc)
        sampler.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_reference(sc: Scenario, baseline: Path, data: Path,
                  timeout: float = 2400) -> dict[str, Any]:
    """Run the reference app once through its harness; return the measurements."""
    work = Path(tempfile.mkdtemp(prefix="reference-bench-"))
    app = work / "app"
    shutil.copytree(baseline / "app", app)  # the harness builds its FAB from this dir
    out = work / "out.json"
    env = {**os.environ, **QUIET, "TMPDIR": str(work), "KEEP_WORK": "1",
           "VENV": str(VENV_BIN.parent), "APP": str(app),
           "RUN_CONFIG": f"local-epochs={sc.local_epochs} batch-size={sc.batch_size} "
                         f"learning-rate={sc.learning_rate} "
                         f"partitioning='{sc.partitioning}'"}
    sampler = EdgeSampler(supernodes)
    sampler.start()
    try:
        done = subprocess.run(["bash", str(baseline / "run_baseline.sh"), str(data),
                               str(sc.clients), str(sc.rounds), str(out)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        sampler.stop()
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"reference run failed:\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
        rounds, meta, raw = result["rounds"], result["meta"], result["server_raw"]
        (state_db,) = work.glob("flwr-baseline.*/state/state.db")
        node = next(iter(v for k, v in meta["daemons_peak_rss"].items()
                         if k.startswith("supernode")), {})
        clientapp_peak = max(r["max_client_peak_rss_mb"] or 0.0 for r in rounds)
        t0 = raw["rounds"][0]["t_start_unix"]
        steady = raw["rounds"][1:] or raw["rounds"]
        round_peak, round_roles = sampler.peak(steady[0]["t_start_unix"],
                                               steady[-1]["t_end_unix"])
        return {
            "rounds": [{k: r.get(k) for k in ("round", "wall_s", "max_client_train_s",
                                              "accuracy")} for r in rounds],
            "median_overhead_s": _median_after_first([r["overhead_s"] for r in rounds]),
            "median_round_s": _median_after_first([r["wall_s"] for r in rounds]),
            "final_accuracy": rounds[-1]["accuracy"],
            "time_to_target_s": _time_to_target(
                [(r["t_end_unix"], (r.get("eval_agg") or {}).get("eval_acc"))
                 for r in raw["rounds"]], t0, sc.target_accuracy),
            "wire_ratio": run_traffic(state_db) / (sc.rounds * sc.clients)
            / (2 * raw["run"]["model_bytes"]),
            "model_bytes": raw["run"]["model_bytes"],
            "edge_peak_mb": (node.get("peak_rss_mb") or 0.0)
            + (node.get("superexec_peak_rss_mb") or 0.0) + clientapp_peak,
            "edge_processes_mb": {"supernode": node.get("peak_rss_mb"),
                                  "superexec": node.get("superexec_peak_rss_mb"),
                                  "clientapp": clientapp_peak},
            "edge_round_peak_mb": round_peak,
            "edge_round_processes_mb": round_roles,
            "client_start_s": meta.get("supernodes_ready_s"),
        }
    finally:
        sampler.stop()
        shutil.rmtree(work, ignore_errors=True)
