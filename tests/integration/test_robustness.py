"""A poisoned device among honest ones, with the real SuperLink and SuperNodes.

The attacker runs the real SuperNode and ClientApp; only its trainer (see
poisoned_worker.py) changes the update it returns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Fleet
from ports import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def _run(fleet: Fleet, tmp_path: Path, mode: str, strategy: str, *extra: str
         ) -> dict[str, Any]:
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", "4",
        "--min-clients", "5", "--strategy", strategy, "--local-epochs", "1",
        "--partitioning", "iid", "--exit-when-done", "--state-dir", "state",
        "--output-dir", "out", "--client-wait-timeout", "300", *extra)
    for i in range(4):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/5", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "60")
    fleet.device_with_trainer(f"attacker-{mode}", port,
                              [sys.executable, str(HERE / "poisoned_worker.py"), mode], (4, 5))
    assert server.wait(timeout=1200) == 0, fleet.log("server")[-3000:]
    (path,) = (tmp_path / "out").glob("run-*/metrics.json")
    return dict(json.loads(path.read_text()))


def test_a_scaled_update_is_rejected_every_round(fleet: Fleet, tmp_path: Path) -> None:
    """FedAvg with update checks: the x1000 update never reaches the model."""
    record = _run(fleet, tmp_path, "scale", "fedavg")
    rounds = record["rounds"]
    assert all(r["rejected_replies"] == 1 and r["train_replies"] == 4 for r in rounds)
    assert all("over 10x the round's median" in r["errors"][0]["error"] for r in rounds)
    assert rounds[-1]["central_accuracy"] > 0.85, [r["central_accuracy"] for r in rounds]


def test_fedmedian_shrugs_off_a_sign_flipped_update(fleet: Fleet, tmp_path: Path) -> None:
    """With the norm check off, the median still ignores one flipped update in five."""
    record = _run(fleet, tmp_path, "flip", "fedmedian", "--max-update-norm-ratio", "0")
    rounds = record["rounds"]
    assert all(r["train_replies"] == 5 and not r.get("rejected_replies") for r in rounds)
    assert rounds[-1]["central_accuracy"] > 0.85, [r["central_accuracy"] for r in rounds]

