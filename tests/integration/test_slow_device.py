"""A slow but working device under ``--round-deadline paced``: it counts every round.

Two real devices on 127.0.0.1: one plain, one whose trainer waits 20 s before each
train request (slow_worker.py), like an arm64 board under emulation next to a fast
one. With the fixed deadline (quorum 0.5 + grace, 10 s floor) such a device is "no
reply by the deadline" in every round (tests/server/test_grid.py shows it on a fake
clock). With the paced deadline it is left out of the first round only (never seen:
the plain grace), then waited for, and its update goes into every later round.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fleet_helpers import Fleet, free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
ROUNDS = 3


def test_a_slow_device_contributes_to_every_round_once_paced(fleet: Fleet,
                                                              tmp_path: Path) -> None:
    """Round 1 closes at the grace without it; rounds 2 and 3 wait for it."""
    # Prepare
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--min-clients", "2",
        "--local-epochs", "1", "--exit-when-done", "--state-dir", "state",
        "--output-dir", "out", "--client-wait-timeout", "300", "--rounds", str(ROUNDS),
        "--fraction-evaluate", "0", "--round-timeout", "240",
        "--round-deadline", "paced", "--straggler-rounds", "2")  # margin 1.5, cap 10x
    fleet.start("fast", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                "--partition", "0/2", "--runtime-port", str(free_port()), "--home", "fast",
                "--connect-timeout", "60")
    fleet.device_with_trainer("slow", port, [sys.executable, str(HERE / "slow_worker.py"),
                                             "--delay", "20"], (1, 2))
    # Execute
    assert server.wait(timeout=900) == 0, fleet.log("server")[-3000:]
    # Assert
    (path,) = (tmp_path / "out").glob("run-*/metrics.json")
    record = json.loads(path.read_text())
    assert record["status"] == "completed"
    rows = record["rounds"]
    (late,) = [e["node_id"] for e in rows[0]["errors"] if e["kind"] == "deadline"]
    for row in rows[1:]:
        assert row["train_replies"] == 2 and not row["errors"], row
        slow = next(c for c in row["clients"] if c["node_id"] == late)
        assert slow["weight"] > 0 and slow["device"]["handler_s"] >= 20
        assert row["wall_s"] < 200, row["wall_s"]  # waited for, not the deadline
    book = record["participation"]
    assert book[late] == {"asked": ROUNDS, "contributed": ROUNDS - 1,
                          "missed_in_a_row": 0, "last_contributed": ROUNDS}
    assert [p["contributed"] for n, p in book.items() if n != late] == [ROUNDS]
    assert not any(row.get("stragglers") for row in rows)
