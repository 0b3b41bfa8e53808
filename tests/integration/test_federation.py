"""A real federation on 127.0.0.1: one SuperLink, three SuperNodes, the fedfleet CLI.

Every process is started through the same commands a user runs, each in its own
process group, and all are killed at the end whatever happens.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fleet_helpers import Fleet
from ports import free_port

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 900


def test_three_clients_train_the_digits_model(fleet: Fleet, tmp_path: Path) -> None:
    """Three non-IID clients, three rounds: accuracy far above chance and rising."""
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", "3",
        "--min-clients", "3", "--exit-when-done", "--state-dir", "state",
        "--output-dir", "out", "--client-wait-timeout", "240")
    for i in range(3):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/3", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "60")
    try:
        code = server.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run did not finish in {RUN_TIMEOUT}s:\n{fleet.log('server')}")
    output = fleet.log("server")
    assert code == 0, output + fleet.log("client0")[-3000:]
    assert "done: run" in output and "round 3/3" in output

    (run_dir,) = (tmp_path / "out").glob("run-*")
    record = json.loads((run_dir / "metrics.json").read_text())
    rounds = record["rounds"]
    assert record["status"] == "completed" and [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["train_replies"] == 3 and r["train_failures"] == 0 for r in rounds)
    first, last = rounds[0]["central_accuracy"], rounds[-1]["central_accuracy"]
    assert last > 0.5 and last > first, [r["central_accuracy"] for r in rounds]
    assert all(r["wall_s"] > 0 and r["max_client_train_s"] > 0 for r in rounds)
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.keras")) == [
        "round-001.keras", "round-002.keras", "round-003.keras"]

    import keras

    from fedfleet.shared.data import load_dataset

    test = load_dataset("builtin:digits", split="test")
    model = keras.models.load_model(run_dir / "final_model.keras")
    accuracy = float(np.mean(model.predict(test.x, verbose=0).argmax(1) == test.y))
    assert accuracy == pytest.approx(last, abs=1e-6)


def test_server_without_enough_clients_stops_in_bounded_time(fleet: Fleet) -> None:
    """Nobody joins: the run fails with a one-line reason and a non-zero exit."""
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--min-clients", "2",
        "--exit-when-done", "--state-dir", "state", "--output-dir", "out",
        "--client-wait-timeout", "5")
    code = server.wait(timeout=180)
    output = fleet.log("server")
    assert code == 1, output
    assert "only 0 of the 2 clients needed were connected after 5s" in output
    assert "Traceback" not in output


def test_sigterm_stops_the_superlink_too(fleet: Fleet) -> None:
    """SIGTERM to 'fedfleet server' (as docker stop sends) leaves no SuperLink behind."""
    import os
    import signal
    import time

    from fedfleet.shared.process import probe

    port = free_port()
    server = fleet.start("server", "server", "--insecure", "--port", str(port),
                         "--no-run", "--state-dir", "state")
    deadline = time.monotonic() + 60
    while probe(f"127.0.0.1:{port}", False, None) is not None:
        assert time.monotonic() < deadline, fleet.log("server")
        time.sleep(0.5)
    os.kill(server.pid, signal.SIGTERM)  # the process only, not its group
    assert server.wait(timeout=30) != 0
    time.sleep(1)
    assert probe(f"127.0.0.1:{port}", False, None) is not None  # nobody answers now
