"""Run records shaped like the ones RunRecorder writes, for tests of their readers.

The shape is :class:`fedfleet.shared.runrecord.RunRecord`'s: the server's own fields per
client (``weight``, ``update_norm``), what the device reported under ``device``, errors
with their ``kind``.
"""

from __future__ import annotations

import math
from typing import Any

NODES = ["12318207441012117451", "5550001112223334445", "9876543210987654321"]


def sample_record(rounds: int = 5, nodes: list[str] | None = None,
                  status: str = "completed") -> dict[str, Any]:
    """Return a record of ``rounds`` rounds in which ``nodes`` train and evaluate.

    Round 2 has one rejected reply (the last node) and, from round 3 on, the last
    node's reply times out in round 3.
    """
    nodes = NODES if nodes is None else nodes
    settings = {"num-rounds": rounds, "local-epochs": 2, "strategy": "fedavg",
                "model": "cnn", "input-shape": "8,8,1", "num-classes": 10,
                "eval-data": "builtin:digits", "compression": "none"}
    record: dict[str, Any] = {
        "run": {"run_id": 4242, "started_at": 1_700_000_000.0, "num_rounds": rounds,
                "settings": settings, "num_params": 21386, "model_bytes": 85544},
        "status": status, "initial": {"loss": 2.31, "accuracy": 0.09}, "rounds": []}
    for r in range(1, rounds + 1):
        acc = 1 - 0.9 * math.exp(-r / 2)
        errors = []
        clients = []
        for i, node in enumerate(nodes):
            if r == 2 and i == len(nodes) - 1:
                errors.append({"phase": "train", "node_id": node, "kind": "rejected",
                               "error": "rejected: update norm 812.3 is over 10x the "
                                        "round's median 19.7 (--max-update-norm-ratio)"})
                continue
            if r == 3 and i == len(nodes) - 1:
                errors.append({"phase": "train", "node_id": node, "kind": "deadline",
                               "error": "no reply by the deadline (the round closed "
                                        "after 21.3s with 2 of 3 replies)"})
                continue
            clients.append({"node_id": node, "weight": 380.0 + i, "update_norm": 19.0 + i,
                            "device": {
                                "num-examples": 380.0 + i, "train_loss": 2.0 / (r + i),
                                "train_accuracy": acc - 0.02 * i,
                                "train_time_s": 1.5 + 0.3 * i + 0.05 * r, "warm": 1.0,
                                "eval_loss": 1.0 / (r + i), "eval_accuracy": acc - 0.03 * i,
                                "eval_num-examples": 95.0}})
        record["rounds"].append({
            "round": r, "started_at": 1_700_000_000.0 + 10 * r, "clients": clients,
            "errors": errors, "train_replies": len(nodes) - len(errors),
            "train_failures": len(errors),
            "rejected_replies": sum(e["kind"] == "rejected" for e in errors),
            "no_reply": sum(e["kind"] == "deadline" for e in errors),
            "train_loss": 2.0 / r, "train_accuracy": acc - 0.01, "eval_replies": len(nodes),
            "eval_loss": 1.5 / r, "eval_accuracy": acc - 0.02, "central_loss": 1.4 / r,
            "central_accuracy": acc, "max_client_train_s": 2.3,
            "checkpoint": f"round-{r:03d}.keras", "wall_s": 8.5 + r * 0.1})
    return record
