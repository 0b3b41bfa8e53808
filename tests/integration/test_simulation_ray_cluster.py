"""``fedfleet simulate`` on a Ray cluster of two nodes: this host and a network namespace.

The test builds its own two-machine cluster: a network namespace joined to the host by
a veth pair (a private /30), a Ray head on the host side (1 CPU) and a Ray worker node
inside the namespace (1 CPU; same Python environment and filesystem, its own network
and Ray temp dir). ``fedfleet simulate --ray-address HEAD:PORT`` must finish a run whose
folder reads like a real run's, with the virtual devices' work done on both nodes, as
the replies' placement (tallied in ``simulation.json``) shows.

Needs root and ``ip netns``. Ray is stopped by process (the ``ray start --block``
sessions this test started, and whatever runs from their temp dirs), never with
``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fleet_helpers import Fleet, cli
from ports import free_port
from test_simulation import SIMULATION_ONLY, _files, _shape, _wait

from fedfleet.server.results.run_files import checkpoint_path

RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT = 90.0
"""Seconds a Ray node may take to start, and the cluster to show both nodes."""
RUN_FILES = {"metrics.json", "metrics.csv", "final_model.keras", "models.json"}
"""Files every run folder has (with checkpoints and plots)."""


def _problem() -> str | None:
    """Return why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "ip (iproute2) not installed"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, check=False,
                      timeout=10).returncode != 0:
        return "ip netns is not available here"
    if not Path(RAY).exists():
        return "ray not installed (pip install 'fedfleet-server[simulation]')"
    return None


PROBLEM = _problem()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]


def _sh(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")


def _subnet() -> tuple[str, str]:
    """Return a free (host, worker) address pair in 10.213.0.0/16, a /30 each."""
    taken = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                           check=False, timeout=10).stdout
    while True:
        prefix = f"10.213.{random.randrange(1, 255)}."
        if prefix not in taken:
            base = 4 * random.randrange(64)
            return f"{prefix}{base + 1}", f"{prefix}{base + 2}"


def _session_processes(leader: int, marker: str) -> list[int]:
    """Return the processes of ``leader``'s session or with ``marker`` in their command."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        session = int(stat.rsplit(")", 1)[1].split()[4])
        if session == leader or marker in cmdline:
            found.append(int(entry.name))
    return found


@dataclass
class RayNode:
    """One ``ray start --block`` we started, with its own temp dir and log."""

    proc: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path

    def output(self) -> str:
        """Return what ``ray start`` printed."""
        return self.log.read_text(errors="replace")

    def wait_started(self) -> None:
        """Wait until the node says it started (bounded), or fail with its output."""
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not start:\n{self.output()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the node's processes (SIGTERM, then SIGKILL), bounded; drop its temp dir."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block shuts its node down
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_processes(self.proc.pid, str(self.temp_dir)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while _session_processes(self.proc.pid, str(self.temp_dir)) and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class RayCluster:
    """A Ray head on the host end of a veth pair, a worker node in a namespace."""

    workdir: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 1000:03d}"
                     f"{random.randrange(100):02d}")
    nodes: list[RayNode] = field(default_factory=list)
    netns_made: bool = False

    def __post_init__(self) -> None:
        """Pick names and addresses."""
        self.netns = f"frc-{self.tag}"
        self.veth_host, self.veth_worker = f"frh{self.tag}", f"frw{self.tag}"
        self.head_ip, self.worker_ip = _subnet()
        self.port = free_port()

    @property
    def address(self) -> str:
        """Return the head's GCS address, as ``--ray-address`` takes it."""
        return f"{self.head_ip}:{self.port}"

    def start(self) -> None:
        """Make the namespace and veth pair, start the head and the worker, wait for both."""
        _sh("ip", "netns", "add", self.netns)
        self.netns_made = True
        _sh("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name",
            self.veth_worker)
        _sh("ip", "link", "set", self.veth_worker, "netns", self.netns)
        _sh("ip", "addr", "add", f"{self.head_ip}/30", "dev", self.veth_host)
        _sh("ip", "link", "set", self.veth_host, "up")
        _sh("ip", "-n", self.netns, "addr", "add", f"{self.worker_ip}/30", "dev",
            self.veth_worker)
        _sh("ip", "-n", self.netns, "link", "set", self.veth_worker, "up")
        _sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        head = self._ray("head", (), "--head", "--node-ip-address", self.head_ip,
                         "--port", str(self.port), "--include-dashboard=false",
                         # Ports Ray would otherwise take fixed on the host
                         # (another Ray there may hold them):
                         "--dashboard-port", str(free_port()),
                         "--ray-client-server-port", str(free_port()),
                         "--dashboard-agent-listen-port", str(free_port()),
                         "--node-manager-port", str(free_port()),
                         "--object-manager-port", str(free_port()))
        head.wait_started()
        # Ports the head must reach on the worker, pinned: it has its own network.
        worker = self._ray("worker", ("ip", "netns", "exec", self.netns),
                           "--address", self.address, "--node-ip-address", self.worker_ip,
                           "--node-manager-port", "6380", "--object-manager-port", "6381",
                           "--min-worker-port", "11000", "--max-worker-port", "11099")
        worker.wait_started()
        self._wait_for_cpus(2)

    def _ray(self, name: str, wrap: tuple[str, ...], *args: str) -> RayNode:
        temp_dir = Path(f"/tmp/frc{name[0]}{self.tag}")  # short: socket paths < 108 bytes
        log = self.workdir / f"ray-{name}.log"
        proc = subprocess.Popen(
            [*wrap, RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
             "--temp-dir", str(temp_dir), *args],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RAY_ADDRESS": ""})
        node = RayNode(proc, temp_dir, log)
        self.nodes.append(node)
        return node

    def _wait_for_cpus(self, cpus: int) -> None:
        """Wait until ``ray status`` counts ``cpus`` CPUs in the cluster (both nodes)."""
        deadline = time.monotonic() + START_TIMEOUT
        status = ""
        while time.monotonic() < deadline:
            status = subprocess.run([RAY, "status", "--address", self.address],
                                    capture_output=True, text=True, timeout=60,
                                    check=False).stdout
            if re.search(rf"/{cpus}\.0 CPU", status):
                return
            time.sleep(2)
        pytest.fail(f"the cluster never had {cpus} CPUs:\n{status}")

    def close(self) -> None:
        """Stop both nodes (worker first), delete the namespace and the veth pair."""
        for node in reversed(self.nodes):
            node.stop()
        if self.netns_made:
            subprocess.run(["ip", "netns", "del", self.netns], check=False, timeout=30,
                           capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth_host], check=False, timeout=30,
                       capture_output=True)  # gone with the namespace, normally

    def logs(self) -> str:
        """Return the tail of each node's ``ray start`` output."""
        return "\n".join(f"--- {n.log.name}\n{n.output()[-2000:]}" for n in self.nodes)


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """Yield a started two-node Ray cluster; everything is gone at teardown."""
    cluster = RayCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_virtual_devices_run_on_both_nodes_of_a_ray_cluster(
        ray_cluster: RayCluster, fleet: Fleet, tmp_path: Path) -> None:
    """6 devices, 2 rounds, 1 CPU per device on two 1-CPU nodes: both nodes do the work."""
    # Execute
    proc = fleet.start("sim", "simulate", "--ray-address", ray_cluster.address,
                       "--devices", "6", "--rounds", "2", "--local-epochs", "1",
                       "--cpus-per-device", "1", "--output-dir", "sim",
                       "--state-dir", "sim-state")
    output = _wait(fleet, "sim", proc)

    # Assert: a run like any other
    assert "round 1/2 |" in output and "round 2/2 |" in output, output
    assert "done: run" in output and "final accuracy" in output, output
    (run_dir,) = (tmp_path / "sim").glob("run-*")
    files = _files(run_dir)
    assert RUN_FILES | SIMULATION_ONLY <= files, files
    assert any(f.startswith("plots/") for f in files), files
    assert all(checkpoint_path(run_dir, r).is_file() for r in (1, 2))
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    shape = _shape(record)
    assert len(shape["rounds"]) == 2 and "settings" in shape["run"], shape
    report = cli(tmp_path, "report", str(run_dir))
    assert report.returncode == 0 and (run_dir / "report.html").is_file(), report.stderr

    # Assert: on the cluster (no local Ray has the namespace's address), both nodes ran
    # actors that did the devices' work
    nodes = json.loads((run_dir / "simulation.json").read_text())["ray_nodes"]
    assert {n["ip"] for n in nodes} == {ray_cluster.head_ip, ray_cluster.worker_ip}, (
        f"{nodes}\n{ray_cluster.logs()}")
    assert all(n["actors"] >= 1 and n["replies"] >= 1 for n in nodes), nodes
    assert len({n["node_id"] for n in nodes}) == 2
    trained = sum(row["train_replies"] for row in record["rounds"])
    assert sum(n["replies"] for n in nodes) >= trained > 0, (nodes, record["rounds"])
    assert f"Ray nodes: 2 ({nodes[0]['ip']}: " in output, output
