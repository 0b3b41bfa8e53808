"""Faults on 127.0.0.1 with the real daemons: a server that crashes mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Fleet
from ports import free_port

pytestmark = pytest.mark.integration


def _records(out: Path) -> dict[int, dict[str, Any]]:
    records = {}
    for path in out.glob("run-*/metrics.json"):
        record = json.loads(path.read_text())
        records[int(record["run"]["run_id"])] = record
    return records


def _power_off(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, like a device losing power."""
    tree, queue = [], [pid]
    while queue:
        parent = queue.pop()
        tree.append(parent)
        children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True,
                                  text=True, check=False).stdout.split()
        queue += [int(c) for c in children]
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _crash(fleet: Fleet, port: int) -> None:
    """SIGKILL the SuperLink and everything under it, then the server, like a power cut.

    The SuperLink's tree first (its SuperExec runs in a session of its own, and the
    ServerApp under that): an orphaned ServerApp lives until it notices its parent is
    gone and may finish the round it was aggregating meanwhile, which a power cut
    would not allow. Killed after the server, the SuperLink would get the tether's
    SIGTERM and shut down gracefully, ending the run under the ServerApp (which then
    records a failure), which is a stop, not the crash this test is about.
    """
    found = subprocess.run(["pgrep", "-f", f"flower-superlink .*--port {port}"],
                           capture_output=True, text=True, check=False).stdout.split()
    for pid in found:
        _power_off(int(pid))
    os.killpg(fleet.procs[0].pid, signal.SIGKILL)


def test_a_crashed_server_continues_the_run_from_its_last_round(
        fleet: Fleet, tmp_path: Path) -> None:
    """Kill server + SuperLink after round 2 of 5; started again, it finishes the run."""
    port = free_port()
    args = ["server", "--insecure", "--port", str(port), "--rounds", "5", "--min-clients",
            "2", "--local-epochs", "1", "--strategy", "fedadam", "--exit-when-done",
            "--state-dir", "state", "--output-dir", "out", "--client-wait-timeout", "240"]
    fleet.start("server", *args)
    for i in range(2):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/2", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "60")
    deadline = time.monotonic() + 600
    while not any(len(r["rounds"]) >= 2 for r in _records(tmp_path / "out").values()):
        assert time.monotonic() < deadline, fleet.log("server")
        time.sleep(0.5)
    _crash(fleet, port)
    (first_id, before), = _records(tmp_path / "out").items()
    done_before = len(before["rounds"])
    assert before["status"] == "running" and done_before >= 2

    again = fleet.start("server-again", *args)
    assert again.wait(timeout=900) == 0, fleet.log("server-again")[-3000:]
    log = fleet.log("server-again")
    assert f"Run {first_id} was interrupted after round {done_before}; continuing it" in log
    records = _records(tmp_path / "out")
    old = records.pop(first_id)
    (new_id, new), = records.items()
    assert old["status"] == "interrupted" and old["continued_by"] == new_id
    assert new["status"] == "completed"
    assert new["run"]["resumed_from"] == {"run_id": first_id, "round": done_before}
    assert [r["round"] for r in new["rounds"]] == [1, 2, 3, 4, 5]
    for carried, original in zip(new["rounds"][:done_before], old["rounds"], strict=True):
        for key in ("round", "train_loss", "central_accuracy", "checkpoint"):
            assert carried[key] == original[key]  # history kept; the next round's
            # train replies add their scores of the last carried round's model
    assert all(r["train_replies"] == 2 for r in new["rounds"])
    run_dir = tmp_path / "out" / f"run-{new_id}"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.keras")) == [
        f"round-{r:03d}.keras" for r in range(done_before, 6)]  # its start, then its own
    assert (run_dir / "final_model.keras").exists()
    assert new["rounds"][-1]["central_accuracy"] > 0.5


def test_a_client_killed_mid_round_does_not_stall_the_run(
        fleet: Fleet, tmp_path: Path) -> None:
    """Three clients; one is SIGKILLed once all three have trained: the run ends with two.

    The run starts at --min-clients 2, so the third device may join in round 2; the kill
    waits for a round in which all three trained and lands in the round after it.
    """
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", "5",
        "--min-clients", "2", "--local-epochs", "3", "--round-timeout", "60",
        "--exit-when-done", "--state-dir", "state", "--output-dir", "out")
    clients = [fleet.start(f"client{i}", "join", "--insecure", "--server",
                           f"127.0.0.1:{port}", "--partition", f"{i}/3", "--runtime-port",
                           str(free_port()), "--home", f"client{i}", "--connect-timeout",
                           "60") for i in range(3)]
    deadline = time.monotonic() + 600
    while not any(row["train_replies"] == 3 for r in _records(tmp_path / "out").values()
                  for row in r["rounds"]):
        assert time.monotonic() < deadline and server.poll() is None, fleet.log("server")
        time.sleep(0.2)
    _power_off(clients[2].pid)  # mid-round: join, SuperNode, trainer, ClientApp
    assert server.wait(timeout=900) == 0, fleet.log("server")[-3000:]
    (record,) = _records(tmp_path / "out").values()
    rounds = record["rounds"]
    assert record["status"] == "completed" and [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    assert max(r["train_replies"] for r in rounds) == 3
    assert all(r["train_replies"] >= 2 for r in rounds)
    assert rounds[-1]["train_replies"] == 2
