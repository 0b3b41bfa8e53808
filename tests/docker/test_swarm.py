"""A swarm of devices through the real gateway: rounds close with churn; no growth in a soak.

One server for the module: ``fedfleet server`` (TLS, node auth, 50 keys in
``--authorized-keys``) behind the fedfleet gateway image on this host's loopback
(``benchmarks/swarm/stack.py``), and 50 virtual devices (``benchmarks/swarm``: Flower's
Fleet API with each device's own key, signed requests, TLS; no TensorFlow) from 13
loopback source addresses.

- churn: a share of the devices leave without a word on their first train message and
  come back with the same key; every round still closes, and each round's record names
  exactly the devices that were silent in it (checked against what the swarm did).
- soak: more rounds while the SuperLink's and the ServerApp's memory, threads and open
  files are sampled every second; the last third of the run may not exceed the first
  third by more than the bounds below.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm import procs
from swarm.device import Pace
from swarm.launch import Swarm, SwarmResult, make_keys
from swarm.stack import Stack, StackOptions

pytestmark = pytest.mark.docker

DEVICES = 50
SAMPLED = 10
CHURN_EVERY = 4  # every 4th device vanishes on its first train message
RSS_BOUND_MB = 40.0
"""Growth allowed between the first and the last third of the soak (medians)."""
FDS_BOUND = 16
THREADS_BOUND = 4
COME_BACK_S = 90.0
ROUNDS = 12
THREAD_POOL = 50
"""The SuperLink's threads grow with concurrent requests up to its pool: anyio's 40
worker threads plus Flower's and uvicorn's own (~10). Growth within it is no leak."""


@pytest.fixture(scope="module")
def stack(docker_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("swarm")
    keys = make_keys(work / "keys", DEVICES)
    authorized = work / "authorized"
    authorized.mkdir()
    for key in keys:
        (authorized / f"{key.name}.pub").write_bytes(Path(f"{key}.pub").read_bytes())
    running = Stack.start(StackOptions(work, authorized_keys=authorized))
    try:
        yield running
    finally:
        running.stop()


def _keys(stack: Stack) -> list[Path]:
    return make_keys(stack.options.workdir / "keys", DEVICES)


def _wait_online(stack: Stack, count: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    online = 0
    while time.monotonic() < deadline:
        online = sum(1 for n in stack.nodes() if n.get("status") == "online")
        if online >= count:
            break
        time.sleep(2)
    return online


def _submit(stack: Stack, rounds: int) -> int:
    return stack.submit("--rounds", str(rounds), "--fraction-train",
                        f"{SAMPLED / DEVICES}", "--fraction-evaluate",
                        f"{SAMPLED / DEVICES}", "--min-clients", str(SAMPLED),
                        "--eval-data", "", "--round-timeout", "120")


def _run(stack: Stack, rounds: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    run_id = _submit(stack, rounds)
    return run_id, stack.wait_run(run_id, timeout=rounds * 150 + 120)


def test_one_device_cannot_flood_the_superlink_with_polls(stack: Stack) -> None:
    """A registered device polling flat out is shed at the gateway; its neighbour is not.

    The two devices share one source address, so it is the per-device limit (polls and
    heartbeats per key: 2/s, bursts of 20) that acts, not the per-address one.
    """
    # Prepare
    greedy_key, calm_key = _keys(stack)[-2:]
    greedy = asyncio.run(_flood(stack, greedy_key, calm_key))
    codes, calm_codes = greedy

    # Assert: after its burst the greedy device got 503s, about 2/s went through
    served = codes.count(200)
    assert codes.count(503) >= 40, codes
    assert served <= 20 + 2 * 15 + 5, served  # burst + rate x the seconds it ran
    # ... its neighbour on the same address was served every time
    assert calm_codes == [200] * len(calm_codes) and calm_codes
    # ... and the gateway logged the refusals with the greedy device's key
    logs = stack.gateway.logs().decode(errors="replace")
    refused = [line for line in logs.splitlines()
               if "/v1/fleet/pull-messages" in line and '" 503 ' in line]
    assert len(refused) >= 40 and all("node-key=" in line for line in refused)


async def _flood(stack: Stack, greedy_key: Path, calm_key: Path
                 ) -> tuple[list[int], list[int]]:
    import ssl

    import httpx
    from cryptography.hazmat.primitives import serialization
    from flwr.proto.fleet_pb2 import (
        ActivateNodeRequest,
        ActivateNodeResponse,
        DeactivateNodeRequest,
        DeactivateNodeResponse,
        PullMessagesRequest,
    )
    from flwr.proto.node_pb2 import Node
    from swarm.fleetapi import FleetClient, Stats

    context = ssl.create_default_context(cafile=str(stack.ca_file))
    clients = []
    for key_path in (greedy_key, calm_key):
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
            verify=context, local_address="127.0.0.9"))
        clients.append(FleetClient(http, stack.base_url, key, Stats()))  # type: ignore[arg-type]
    nodes = []
    for client in clients:
        answer = await client.call("activate-node", ActivateNodeRequest(
            public_key=client.public_key, heartbeat_interval=30), ActivateNodeResponse)
        nodes.append(Node(node_id=answer.node_id))
    codes: list[int] = []
    calm: list[int] = []
    started = time.monotonic()
    while time.monotonic() - started < 15 and len(codes) < 400:
        for i, (client, node) in enumerate(zip(clients, nodes, strict=True)):
            if i == 1 and len(codes) % 20:  # the calm one: every 20th greedy request
                continue
            body = PullMessagesRequest(node=node).SerializeToString()
            response = await client._http.post(
                f"{stack.base_url}/v1/fleet/pull-messages", content=body,
                headers={**client._static, **client.auth_headers()})
            (codes if i == 0 else calm).append(response.status_code)
        await asyncio.sleep(0.02)
    for client, node in zip(clients, nodes, strict=True):
        await client.call("deactivate-node", DeactivateNodeRequest(node_id=node.node_id),
                          DeactivateNodeResponse)
    return codes, calm


def test_rounds_close_under_churn_and_name_the_silent(stack: Stack) -> None:
    """Devices vanish mid-round and come back; every round closes and names them."""
    # Prepare
    paces = [Pace(vanish_in_round=1, away_s=15.0) if i % CHURN_EVERY == 0 else Pace()
             for i in range(DEVICES)]
    swarm = Swarm.start(stack.options.workdir / "churn", stack.base_url, stack.ca_file,
                        _keys(stack), paces, duration_s=900, ramp_s=5)
    try:
        assert _wait_online(stack, DEVICES) == DEVICES
        # Execute
        _, record = _run(stack, rounds=3)
        # A device that vanished is refused (412) until its last session times out
        # (2 heartbeats after the last one: <= 60 s) and retries with backoff (<= 20 s
        # apart): give the last of them, gone before the run ended, that long to return.
        time.sleep(COME_BACK_S)
        assert _wait_online(stack, DEVICES, timeout=60) == DEVICES
    finally:
        swarm.stop()
        result = swarm.wait(grace_s=30)

    # Assert: the run completed with every round aggregated
    assert record["status"] == "completed", record.get("error")
    rows = record["rounds"]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["train_replies"] >= SAMPLED // 2 for r in rows), \
        [r["train_replies"] for r in rows]
    # ... the swarm saw no failure of its own, and some devices did vanish
    assert not result.process_failures, result.process_failures
    vanished = {(str(d["node_id"]), rnd) for d in result.devices for rnd in d["vanished"]}
    assert vanished, "no device was sampled while set to vanish; the test proves nothing"
    churners = {str(d["node_id"]) for i, d in enumerate(_by_key(result)) if
                i % CHURN_EVERY == 0}
    # ... each round's record names every device that vanished in it, and blames no
    # device that did not vanish (a vanished device stays silent until it is back)
    for row in rows:
        silent = {e["node_id"] for e in row.get("errors", [])}
        gone_now = {node for node, rnd in vanished if rnd == str(row["round"])}
        assert gone_now <= silent, (row["round"], gone_now, silent)
        assert silent <= churners, (row["round"], silent - churners)
        trained = {c["node_id"] for c in row["clients"]}
        assert not trained & silent
    # ... and the devices that vanished came back under their own keys (same node IDs)
    back = {str(d["node_id"]) for d in result.devices if d["activations"] >= 2}
    assert {node for node, _ in vanished} <= back, result.devices


def _by_key(result: SwarmResult) -> list[dict]:  # type: ignore[type-arg]
    """Return the devices' logs in key order (device i = key i)."""
    return sorted(result.devices, key=lambda d: d["key"])


def test_soak_no_growth_in_memory_threads_or_files(stack: Stack) -> None:
    """Twelve rounds with a 50-device swarm: the server's footprint stays flat.

    Compared: the first and the last third of the steady rounds (after round 2, before
    the last one, whose evaluation and final-model delivery are a different load).
    """
    # Prepare
    swarm = Swarm.start(stack.options.workdir / "soak", stack.base_url, stack.ca_file,
                        _keys(stack), [Pace() for _ in range(DEVICES)], duration_s=900,
                        ramp_s=5)
    samples: list[tuple[int, dict[str, procs.Usage]]] = []
    try:
        assert _wait_online(stack, DEVICES) == DEVICES
        # Execute: sample every second while the run runs
        run_id = _submit(stack, ROUNDS)
        deadline = time.monotonic() + ROUNDS * 150 + 120
        record = None
        while time.monotonic() < deadline:
            record = stack.record(run_id)
            if record is not None and record.get("status") not in (None, "running"):
                break
            roles = stack.server_roles()
            samples.append((len(record["rounds"]) if record else 0,
                            {role: procs.usage(roles.get(role, []))
                             for role in ("superlink", "serverapp")}))
            time.sleep(1.0)
    finally:
        swarm.stop()
        result = swarm.wait(grace_s=30)

    # Assert
    assert record is not None and record["status"] == "completed", record
    assert len(record["rounds"]) == ROUNDS
    assert not result.process_failures, result.process_failures
    steady = [usage for done, usage in samples if 2 <= done < ROUNDS - 1]
    assert len(steady) >= 30, f"only {len(steady)} samples in the steady rounds"
    third = len(steady) // 3
    for role in ("superlink", "serverapp"):
        first, last = steady[:third], steady[-third:]
        for measure, bound in (("rss_mb", RSS_BOUND_MB), ("fds", FDS_BOUND),
                               ("threads", THREADS_BOUND)):
            before = statistics.median(getattr(s[role], measure) for s in first)
            after = statistics.median(getattr(s[role], measure) for s in last)
            print(f"{role} {measure}: first third {before:.1f}, last third {after:.1f}")
            if measure == "threads":  # a pool that grows to the load, up to its size
                assert after <= max(before + bound, THREAD_POOL), (role, before, after)
            else:
                assert after <= before + bound, (role, measure, before, after)
