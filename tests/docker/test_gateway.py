"""Attack the gateway from the edge network and check what the SuperLink saw.

One compose project for the module: the server (its SuperLink logging every request,
``FLWR_LOG_LEVEL=DEBUG``), the gateway, and client-1 for a short run, so a real device
trains through the gateway first. Then ``gateway_probe.py`` runs in an attacker
container on the fleet network and writes raw bytes (TLS and plain TCP) at the gateway.
Every case is judged on the SuperLink's side too: its access log (lines from the
gateway's address, matched to each case's time window) shows no request outside the
allowed Fleet routes and /health, ``fedfleet nodes list`` no new node and ``fedfleet
runs`` no new run.

FEDFLEET_TEST_GATEWAY_IMAGE runs the suite against another gateway image (e.g. an older
build, to see which attacks it lets through); FEDFLEET_GATEWAY_PROBE_REPORT=FILE writes
every case's answer and what the SuperLink saw to FILE.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from dockerkit import compose
from gateway_probe import CASES, REFUSED, Case
from ports import free_port

pytestmark = pytest.mark.docker

ROOT = Path(__file__).parents[2]
PROBE = Path(__file__).with_name("gateway_probe.py")
CLIENT_IMAGE = f"fedfleet-client:{os.environ.get('FEDFLEET_VERSION', '0.1.0')}"
GATEWAY_IMAGE = os.environ.get("FEDFLEET_TEST_GATEWAY_IMAGE", "")
FLEET_ROUTES = {f"POST /v1/fleet/{name}" for name in (
    "register-node", "activate-node", "deactivate-node", "unregister-node",
    "send-node-heartbeat", "pull-messages", "push-messages", "get-run", "get-fab",
    "push-object", "pull-object", "confirm-message-received")}
ALLOWED = FLEET_ROUTES | {"GET /health", "HEAD /health"}
HEALTH = {"GET /health", "HEAD /health"}  # the gateway's own healthcheck asks every 5 s

OVERRIDE = """\
services:
  server:
    environment:
      FLWR_LOG_LEVEL: DEBUG  # the SuperLink logs every request, not only failures
"""

ACCESS = re.compile(r'^(\S+Z) \w+ +\[uvicorn\.access\] ([0-9a-f.:]+):(\d+) - '
                    r'"(\S+) (\S+) HTTP/[0-9.]+" (\d+)')
INVALID = re.compile(r"^(\S+Z) WARNING +\[uvicorn\.error\] Invalid HTTP request")


@dataclass(frozen=True)
class Seen:
    """One request the SuperLink logged."""

    time: float
    address: str
    port: int
    request: str  # "METHOD /path", or "invalid HTTP request"
    status: int


@dataclass
class Edge:
    """The running project and what the tests need to reach it."""

    project: str
    env: dict[str, str]
    outputs: Path
    secrets: Path
    port: int

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return compose(self.project, self.env, *args, timeout=timeout)

    def admin(self, *args: str) -> Any:
        """Run ``fedfleet ARGS --format json`` on the server host; return the JSON."""
        done = self.compose("exec", "-T", "-e", "FLWR_LOG_LEVEL=INFO", "server", "fedfleet",
                            *args, "--format", "json", timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout[done.stdout.index("["):])

    def nodes(self) -> set[str]:
        return {row["node-id"] for row in self.admin("nodes", "list")}

    def runs(self) -> set[str]:
        return {str(row["run-id"]) for row in self.admin("runs")}

    def gateway_address(self) -> str:
        """Return the gateway's address on the server's network (the SuperLink's view)."""
        done = subprocess.run(
            ["docker", "inspect", f"{self.project}-gateway-1", "-f",
             f'{{{{(index .NetworkSettings.Networks "{self.project}_core").IPAddress}}}}'],
            capture_output=True, text=True, check=True, timeout=60)
        return done.stdout.strip()

    def superlink_saw(self, since: float = 0.0) -> list[Seen]:
        """Return the requests from the gateway in the SuperLink's log since ``since``."""
        log = self.compose("exec", "-T", "server", "cat", "/app/state/superlink.log",
                           timeout=120).stdout
        gateway = self.gateway_address()
        seen = []
        for line in log.splitlines():
            if match := ACCESS.match(line):
                stamp, address, port, method, path, status = match.groups()
                if address == gateway:
                    seen.append(Seen(_epoch(stamp), address, int(port), f"{method} {path}",
                                     int(status)))
            elif match := INVALID.match(line):  # no address logged: count it always
                seen.append(Seen(_epoch(match.group(1)), "", 0, "invalid HTTP request", 0))
        return [s for s in seen if s.time >= since]

    def probe(self, *args: str, timeout: float = 600) -> Any:
        """Run gateway_probe.py in a fresh attacker container on the fleet network."""
        done = subprocess.run(
            ["docker", "run", "--rm", "--network", f"{self.project}_fleet",
             "-v", f"{PROBE}:/probe.py:ro",
             "-v", f"{self.secrets / 'client-1'}:/run/secrets/fedfleet:ro",
             "--entrypoint", "python", CLIENT_IMAGE, "/probe.py", *args],
            capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def health_from_another_address(self) -> int:
        """GET /health from the test host, through the published port: not the attacker."""
        context = ssl.create_default_context(cafile=str(self.secrets / "server" / "ca.crt"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                             b"Connection: close\r\n\r\n")
                head = sock.recv(64)
        except OSError:
            return 0
        match = re.match(rb"HTTP/1\.1 (\d{3})", head)
        return int(match.group(1)) if match else 0




def _epoch(stamp: str) -> float:
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return when.timestamp()


def _records(outputs: Path) -> list[dict[str, Any]]:
    found = []
    for path in outputs.glob("run-*/metrics.json"):
        try:
            found.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue  # being written
    return found


@pytest.fixture(scope="module")
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Edge]:
    """Start server, gateway and client-1; wait until a 2-round run has finished."""
    request.getfixturevalue("images")  # built as test_compose builds them
    tmp = tmp_path_factory.mktemp("gateway")
    override = tmp / "override.yaml"
    override.write_text(OVERRIDE + (f"  gateway:\n    image: {GATEWAY_IMAGE}\n"
                                    if GATEWAY_IMAGE else ""))
    outputs = tmp / "outputs"
    outputs.mkdir()
    env = {"COMPOSE_FILE": f"{ROOT / 'compose.yaml'}:{override}",
           "FEDFLEET_OUTPUT_DIR": str(outputs), "FEDFLEET_SECRETS_DIR": str(tmp / "secrets"),
           "FEDFLEET_PORT": str(free_port()), "FEDFLEET_ROUNDS": "2",
           "FEDFLEET_MIN_CLIENTS": "1", "FEDFLEET_LOCAL_EPOCHS": "1"}
    stack = Edge(f"fedfleet-gw-{uuid.uuid4().hex[:8]}", env, outputs, tmp / "secrets",
                 int(env["FEDFLEET_PORT"]))
    try:
        up = stack.compose("up", "--detach", "--no-build", "server", "gateway", "client-1",
                           timeout=600)
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 600
        while not any(r["status"] != "running" for r in _records(outputs)):
            assert time.monotonic() < deadline, stack.compose("logs").stdout[-5000:]
            time.sleep(3)
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")


def test_a_device_trains_through_the_gateway(edge: Edge) -> None:
    """client-1 signs in and trains both rounds through the gateway; nothing else passes."""
    record = _records(edge.outputs)[0]
    assert record["status"] == "completed", edge.compose("logs").stdout[-5000:]
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    assert all(r["train_replies"] == 1 for r in record["rounds"])
    seen = edge.superlink_saw()
    requests = {s.request for s in seen}
    assert {"POST /v1/fleet/activate-node", "POST /v1/fleet/pull-messages",
            "POST /v1/fleet/push-object", "POST /v1/fleet/pull-object"} <= requests, requests
    assert requests <= ALLOWED, requests - ALLOWED
    gateway = edge.compose("logs", "--no-color", "gateway").stdout
    sign_in = [line for line in gateway.splitlines()
               if '"POST /v1/fleet/activate-node HTTP/1.1" 200 ' in line]
    assert sign_in and 'node-key="LS0t' in sign_in[0], gateway[-3000:]


@dataclass
class Attacks:
    """The probe's answers, keyed by case name, and what the SuperLink saw meanwhile."""

    results: dict[str, dict[str, Any]]
    seen: list[Seen]
    nodes: tuple[set[str], set[str]]  # before, after
    runs: tuple[set[str], set[str]]

    def saw_during(self, name: str) -> list[str]:
        """Return what the SuperLink saw from the case's start until the next case's.

        Until the next one starts, not just until the answer came: a request smuggled
        behind the first reaches the SuperLink after the attacker got its answer.
        """
        start = self.results[name]["start"]
        later = [r["start"] for r in self.results.values() if r["start"] > start + 0.05]
        until = max(self.results[name]["end"], min(later, default=float("inf")))
        return [s.request for s in self.seen if start - 0.01 <= s.time < until]


@pytest.fixture(scope="module")
def attacks(edge: Edge) -> Attacks:
    """Run every case of gateway_probe.py once, from one attacker container."""
    edge.compose("stop", "client-1")  # from here on the attacker is the only device
    nodes, runs = edge.nodes(), edge.runs()
    since = time.time()
    results = {r["name"]: r for r in edge.probe("attacks")}
    time.sleep(1)
    found = Attacks(results, edge.superlink_saw(since), (nodes, edge.nodes()),
                    (runs, edge.runs()))
    if report := os.environ.get("FEDFLEET_GATEWAY_PROBE_REPORT"):
        Path(report).write_text(json.dumps(
            [{**result, "superlink_saw": found.saw_during(name)}
             for name, result in results.items()], indent=1))
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_attack_is_refused_before_the_superlink(attacks: Attacks, case: Case) -> None:
    """The gateway answers as expected and passes nothing outside the allow-list."""
    result = attacks.results[case.name]
    statuses = result["statuses"] or [0]
    saw = [request for request in attacks.saw_during(case.name) if request not in HEALTH]
    summary = f"answered {result['statuses']} {result['first_line']!r}; SuperLink saw {saw}"
    assert statuses[0] in case.expect, summary
    assert all(code in REFUSED | {0} for code in statuses[1:]), summary
    assert set(saw) <= set(case.reaches), summary
    if case.group in ("control", "body"):
        assert set(case.reaches) - HEALTH <= set(saw), summary
    if case.closed_within is not None:
        assert result["closed"] and result["closed_after"] <= case.closed_within, \
            f"connection still open after {case.timeout}s" if not result["closed"] else \
            f"closed after {result['closed_after']}s"


def test_attacks_left_no_trace_on_the_superlink(attacks: Attacks) -> None:
    """No new node, no new run; the SuperLink saw only allowed routes from the gateway."""
    assert attacks.nodes[1] == attacks.nodes[0], attacks.nodes[1] - attacks.nodes[0]
    assert attacks.runs[1] == attacks.runs[0], attacks.runs[1] - attacks.runs[0]
    outside = sorted({s.request for s in attacks.seen} - ALLOWED)
    assert outside == [], outside


def _while(action: Any, check: Any, every: float = 0.25) -> tuple[Any, list[tuple[float, Any]]]:
    """Run ``action()`` in a thread; call ``check()`` every ``every`` s until it is done."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", action()))
    thread.start()
    checks = []
    while thread.is_alive():
        checks.append((time.time(), check()))
        time.sleep(every)
    thread.join()
    return out.get("value"), checks


def test_a_burst_from_one_address_is_limited_while_another_is_served(edge: Edge) -> None:
    """3000 quick requests from the attacker: most get 503; the host's keep getting 200.

    What does reach the SuperLink comes over a few kept-alive connections.
    """
    since = time.time()
    burst, checks = _while(lambda: edge.probe("burst", "3000"),
                           edge.health_from_another_address)
    assert burst["sent"] == 3000, burst
    assert burst["statuses"].get("503", 0) >= 1000, burst
    during = [code for when, code in checks if burst["start"] <= when <= burst["end"]]
    assert during and all(code == 200 for code in during), checks
    time.sleep(1)
    health = [s for s in edge.superlink_saw(since)
              if s.request == "GET /health" and burst["start"] <= s.time <= burst["end"]]
    assert len(health) >= burst["statuses"].get("200", 0), len(health)
    ports = {s.port for s in health}
    assert len(ports) <= 20, f"{len(health)} requests over {len(ports)} connections"


def test_a_connection_flood_is_capped_per_address_and_cut_in_time(edge: Edge) -> None:
    """100 idle connections from one address are capped and cut.

    Past the cap they are closed at once, the rest when the header timeout ends; another
    address still gets in meanwhile.
    """
    flood, checks = _while(lambda: edge.probe("flood", "100", "30"),
                           edge.health_from_another_address, every=1.0)
    assert flood["opened"] + flood["failed"] == 100, flood
    assert flood["closed_within_1s"] >= 100 - 32 - flood["failed"], flood
    assert flood["open_at_end"] == 0 and flood["last_closed_after"] <= 15, flood
    assert checks and all(code == 200 for _, code in checks[1:]), checks


def _address(container: str) -> str:
    return subprocess.run(["docker", "inspect", container, "-f",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"],
                          capture_output=True, text=True, check=True, timeout=60
                          ).stdout.strip()


def test_a_recreated_server_container_is_found_again(edge: Edge) -> None:
    """The server comes back on another address; the gateway finds it there."""
    old = _address(f"{edge.project}-server-1")
    assert edge.compose("rm", "--stop", "--force", "server").returncode == 0
    squatters: list[str] = []  # hold the old address, so the new server gets another
    try:
        while len(squatters) < 5 and old not in map(_address, squatters):
            squatters.append(subprocess.run(
                ["docker", "run", "--detach", "--network", f"{edge.project}_core",
                 "--entrypoint", "sleep", CLIENT_IMAGE, "600"],
                capture_output=True, text=True, timeout=60, check=True).stdout.strip())
        up = edge.compose("up", "--detach", "--no-build", "--no-deps", "server", timeout=300)
        assert up.returncode == 0, up.stderr
        assert _address(f"{edge.project}-server-1") != old
        deadline = time.monotonic() + 180
        while edge.health_from_another_address() != 200:
            assert time.monotonic() < deadline, \
                edge.compose("logs", "--no-color", "gateway").stdout[-3000:]
            time.sleep(2)
    finally:
        for squatter in squatters:
            subprocess.run(["docker", "rm", "--force", squatter], capture_output=True,
                           timeout=60, check=False)
