"""The reply intake against real devices: one that lies in every field, one that is silent.

Both run the real SuperLink, SuperNodes, warm trainers and ClientApps on 127.0.0.1.
The hostile device is a plain ``fedfleet join`` whose ClientApp processes get a
``sitecustomize`` shim (hostile/): it does the honest work, then sends one kind of lie
per round. The silent device's trainer takes the train message and never answers,
while its SuperNode stays alive (so Flower's 60 s heartbeat rule does not catch it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Fleet, free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def _server(fleet: Fleet, port: int, *extra: str) -> Any:
    return fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--min-clients", "3",
        "--local-epochs", "1", "--exit-when-done", "--state-dir", "state", "--output-dir",
        "out", "--client-wait-timeout", "300", *extra)


def _join(fleet: Fleet, name: str, port: int, partition: str,
          env: dict[str, str] | None = None) -> None:
    fleet.start(name, "join", "--insecure", "--server", f"127.0.0.1:{port}", "--partition",
                partition, "--runtime-port", str(free_port()), "--home", name,
                "--connect-timeout", "60", env=env)


def _record(tmp_path: Path) -> tuple[dict[str, Any], str]:
    (path,) = (tmp_path / "out").glob("run-*/metrics.json")
    text = path.read_text()
    return dict(json.loads(text)), text


def _errors(row: dict[str, Any], node: str, phase: str) -> list[str]:
    return [e["error"] for e in row["errors"] if e["node_id"] == node and e["phase"] == phase]


def _client(row: dict[str, Any], node: str) -> dict[str, Any]:
    return next((c for c in row["clients"] if c["node_id"] == node), {})


def test_a_device_lying_in_every_field_cannot_hurt_the_run(fleet: Fleet,
                                                           tmp_path: Path) -> None:
    """Seven rounds, seven train lies and six evaluate lies: each named, none kept."""
    port = free_port()
    lies = tmp_path / "lies.jsonl"
    server = _server(fleet, port, "--rounds", "7", "--compression", "float16",
                     "--client-eval", "separate")
    for i in range(2):
        _join(fleet, f"client{i}", port, f"{i}/3")
    _join(fleet, "hostile", port, "2/3", env={"PYTHONPATH": str(HERE / "hostile"),
                                              "FEDFLEET_HOSTILE_LOG": str(lies)})
    assert server.wait(timeout=900) == 0, fleet.log("server")[-3000:]
    record, text = _record(tmp_path)
    sent = [json.loads(line) for line in lies.read_text().splitlines()]
    node = sent[0]["node"]
    assert {(s["round"], s["phase"]) for s in sent if s["lie"]} == {
        *((r, "train") for r in range(1, 8)), *((r, "evaluate") for r in range(1, 7))}
    assert not any(s["honest_error"] for s in sent)

    rows = {r["round"]: r for r in record["rounds"]}
    assert record["status"] == "completed" and sorted(rows) == list(range(1, 8))
    for row in rows.values():  # the others always got through; the round numbers are sane
        assert row["train_replies"] >= 2 and math.isfinite(row["train_loss"])
        assert 0 <= row["eval_accuracy"] <= 1
        for client in row["clients"]:
            assert set(client) <= {"node_id", "weight", "update_norm", "device", "dropped",
                                   "eval_weight"}
            assert not {"node_id", "update_norm", "weight"} & set(client.get("device", {}))
    train = {r: _errors(rows[r], node, "train") for r in rows}
    evaluate = {r: _errors(rows[r], node, "evaluate") for r in rows}
    dropped = {r: _client(rows[r], node).get("dropped", []) for r in rows}

    # round 1: a second ArrayRecord (1e9 everywhere) is dropped; the reply counts
    assert train[1] == [] and "dropped 1 extra ArrayRecord(s) ('extra')" in dropped[1]
    assert evaluate[1] == ["rejected: the reply has no valid eval_loss"]
    # round 2: an Array that is not numpy-serialized
    assert train[2] == [f"rejected: tensor 0 from node {node} has serialization "
                        "'torch.raw', expected 'numpy.ndarray'"]
    assert "dropped 1 ArrayRecord(s): an evaluate reply carries none" in dropped[2]
    assert any(d.startswith("dropped 5001 unknown metric keys ('junk0', 'junk1', 'junk2'")
               for d in dropped[2])
    # round 3: a .npy header announcing 10**12 values
    assert len(train[3]) == 1 and train[3][0].startswith(
        "rejected: .npy data announces shape (1000000, 1000000), expected (")
    assert evaluate[3] == ["rejected: num-examples None is not a whole number"]
    # round 4: NaN loss, 5000 junk keys, server field names, half a global_eval set
    assert train[4] == []
    notes = dropped[4]
    assert "dropped train_loss: nan is not a finite number" in notes
    assert any(d.startswith("dropped 5003 unknown metric keys") for d in notes)
    assert ("dropped global_eval_*: incomplete (has global_eval_loss; lacks "
            "global_eval_accuracy, global_eval_examples)") in notes
    hostile4 = _client(rows[4], node)
    assert hostile4["update_norm"] > 0 and "train_loss" not in hostile4["device"]
    assert evaluate[4] == ["rejected: num-examples 1000000000 is outside 1..100000 "
                           "(raise --max-examples if real)"]
    # round 5: a float16 payload that would inflate to 500x the model
    assert len(train[5]) == 1 and "is not complete: its header needs" in train[5][0]
    assert "dropped 1 extra MetricRecord(s) ('more')" in dropped[5]
    assert "dropped 1 config record(s)" in dropped[5]
    # round 6: a claim of 10 million examples; an error text with terminal escapes
    assert train[6] == ["rejected: num-examples 10000000 is outside 1..100000 "
                        "(raise --max-examples if real)"]
    (escaped,) = evaluate[6]
    assert escaped.startswith("Evil:  [2J ]0;pwned line one line two AAAA")
    assert escaped.endswith(" more characters)") and len(escaped) < 360
    # round 7: a claim of 90,000 examples counts as 3x the round's median claim
    hostile7 = _client(rows[7], node)
    others = [c["weight"] for c in rows[7]["clients"] if c["node_id"] != node]
    assert hostile7["weight"] == 3 * max(others)
    assert f"num-examples 90000 counted as {3 * max(others):g} (--max-examples-ratio)" \
        in dropped[7]

    assert "junk4999" not in text and "\\u001b" not in text and "pwned\\u0007" not in text
    assert text.count("junk") <= 6  # three example names in each of two notes
    assert rows[7]["central_accuracy"] > 0.5
    log = fleet.log("server")
    assert "Traceback" not in log and "\x1b[2J" not in log


def test_a_silent_device_costs_a_grace_period_not_the_deadline(fleet: Fleet,
                                                               tmp_path: Path) -> None:
    """One of three devices never answers: each round closes soon after the other two."""
    port = free_port()
    server = _server(fleet, port, "--rounds", "2", "--round-timeout", "240",
                     "--fraction-evaluate", "0")
    for i in range(2):
        _join(fleet, f"client{i}", port, f"{i}/3")
    fleet.device_with_trainer("silent", port, [sys.executable,
                                               str(HERE / "silent_worker.py")], (2, 3))
    assert server.wait(timeout=600) == 0, fleet.log("server")[-3000:]
    record, _ = _record(tmp_path)
    assert record["status"] == "completed"
    for row in record["rounds"]:
        assert row["train_replies"] == 2 and row["no_reply"] == 1
        (error,) = row["errors"]
        assert error["kind"] == "deadline"
        assert error["error"].startswith("no reply by the deadline (the round closed after")
        assert error["node_id"] not in {c["node_id"] for c in row["clients"]}
        # closed by quorum + grace (about 2x the honest replies' time, at least +10 s),
        # not by the 240 s deadline
        assert row["wall_s"] < 120, row["wall_s"]
    assert "1 no reply" in fleet.log("server")
