"""The run record: what ``metrics.json`` holds, typed, and how a round reads in one line.

One :class:`RunRecord` per run: its settings and model size (``run``), its status, the
test-set scores of the initial model, and one :class:`RoundRow` per finished round.
The ServerApp's :class:`~fedfleet.server.run.recorder.RunRecorder` writes it; the CLI,
the run follower, resume and the benchmarks read it. This module imports neither
Flower nor Keras, so every reader stays light.

What a device reported is kept under each client's ``device`` key, in its own
namespace: no device can write a field of the server's. Which metrics a round row
holds, and which the round line and the CSV show, is the metric catalog's
(:mod:`fedfleet.shared.metrics`): a metric added there appears here without a change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from fedfleet.shared.constants import METRICS_JSON
from fedfleet.shared.metrics import CATALOG, Catalog
from fedfleet.shared.settings import Scalar

Status = Literal["running", "completed", "failed", "interrupted"]
Phase = Literal["train", "evaluate"]
ErrorKind = Literal["error", "rejected", "deadline"]
"""``error``: the device's own failure; ``rejected``: the reply intake refused the
reply; ``deadline``: no reply before the round closed."""


class CentralScores(TypedDict):
    """The global model on the server's test set."""

    loss: float
    accuracy: float


class ErrorRow(TypedDict):
    """A reply that did not count, and why."""

    phase: Phase
    node_id: str
    kind: ErrorKind
    error: str


class ClientRow(TypedDict, total=False):
    """One device in one round (``node_id`` is always there)."""

    node_id: str
    weight: float | None
    """``num-examples`` as counted in the average (after the intake's cap)."""
    eval_weight: float | None
    update_norm: float | None
    device: dict[str, float]
    """What the device reported (train_loss, train_time_s, eval_accuracy, ...)."""
    dropped: list[str]
    """What the intake dropped from its replies, one note each."""


class Participation(TypedDict):
    """One device over the run: the train rounds it was asked in and contributed to."""

    asked: int
    """Rounds whose train message went to it."""
    contributed: int
    """Rounds whose model its update went into (an accepted train reply)."""
    missed_in_a_row: int
    """Rounds it was asked in since it last contributed (0: it did in its last)."""
    last_contributed: int | None
    """The last round it contributed to, or None."""


class RoundRow(TypedDict, total=False):
    """One finished round.

    Counts are of replies; losses and accuracies are weighted means over the replies
    that reported them.
    """

    round: int
    started_at: float
    wall_s: float
    train_phase_s: float
    train_replies: int
    train_failures: int
    rejected_replies: int
    no_reply: int
    train_loss: float
    train_accuracy: float
    warm: float
    eval_replies: int
    eval_loss: float
    eval_accuracy: float
    central_loss: float
    central_accuracy: float
    max_client_train_s: float | None
    payload_bytes_down: int
    payload_bytes_up: int
    clients: list[ClientRow]
    errors: list[ErrorRow]
    stragglers: list[str]
    """Devices that, with this round, contributed to none of the last
    ``straggler-rounds`` rounds they were asked in (named once per streak)."""
    checkpoint: str


class ResumedFrom(TypedDict):
    """The interrupted run a continuation picked up, and after which round."""

    run_id: int
    round: int


class RunInfo(TypedDict, total=False):
    """What the run is: identity, settings, model size."""

    run_id: int
    started_at: float
    num_rounds: int
    settings: dict[str, Scalar]
    num_params: int
    model_bytes: int
    resumed_from: ResumedFrom


class RunRecord(TypedDict, total=False):
    """Everything ``metrics.json`` holds."""

    run: RunInfo
    status: Status
    initial: CentralScores | None
    rounds: list[RoundRow]
    participation: dict[str, Participation]
    """Node ID -> its rounds asked and contributed, for every device asked so far."""
    error: str
    finished_at: float
    continued_by: int
    final_model_delivery: dict[str, str]
    """Node ID -> what the device did with the final model (stored, failed, silent)."""


CSV_COLUMNS = (
    "round", "wall_s", "train_replies", "train_failures", "train_loss",
    "train_accuracy", "eval_replies", "eval_loss", "eval_accuracy",
    "central_loss", "central_accuracy", "max_client_train_s",
)
"""The columns of ``metrics.csv``, one row per round (the catalog may add more)."""


def csv_columns(catalog: Catalog = CATALOG) -> tuple[str, ...]:
    """Return :data:`CSV_COLUMNS`, then the catalog's other reported round fields."""
    extra = [m.round_key for m in catalog if m.report and m.round_key
             and m.round_key not in CSV_COLUMNS]
    return (*CSV_COLUMNS, *(key for key in extra if key is not None))


def new_record(info: RunInfo) -> RunRecord:
    """Return the record of a run that has just started."""
    return {"run": info, "status": "running", "initial": None, "rounds": []}


def read_record(run_dir: Path) -> RunRecord | None:
    """Return the record in ``run_dir``, or None if there is none (yet) or it is torn.

    Files are replaced atomically, so a torn file means someone else wrote it.
    """
    try:
        data: Any = json.loads((run_dir / METRICS_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict) or \
            not isinstance(data.get("rounds"), list):
        return None
    return cast(RunRecord, data)


def round_line(row: RoundRow, num_rounds: int | None = None,
               catalog: Catalog = CATALOG) -> str:
    """Return one readable line about a finished round (metrics: the catalog's ``line``)."""
    parts = [f"round {row.get('round', '?')}" + (f"/{num_rounds}" if num_rounds else ""),
             f"{row.get('wall_s', 0):.1f}s",
             f"{row.get('train_replies', 0)} clients"]
    rejected = row.get("rejected_replies") or 0
    silent = row.get("no_reply") or 0
    failed = (row.get("train_failures") or 0) - rejected - silent
    if failed > 0:
        parts.append(f"{failed} failed")
    if rejected:
        parts.append(f"{rejected} rejected")
    if silent:
        parts.append(f"{silent} no reply")
    if row.get("stragglers"):
        parts.append(f"{len(row['stragglers'])} straggling")
    values: dict[str, Any] = dict(row)
    for metric in catalog:
        value = values.get(metric.round_key or "")
        if metric.line and isinstance(value, (int, float)):
            parts.append(f"{metric.line} {value:{metric.line_format}}")
    return " | ".join(parts)


def final_accuracy(record: RunRecord) -> float | None:
    """Return the last round's test-set accuracy, else its clients' accuracy."""
    rounds = record.get("rounds") or []
    if not rounds:
        return None
    last = rounds[-1]
    return last.get("central_accuracy", last.get("eval_accuracy"))


def summary(record: RunRecord, run_dir: Path) -> str:
    """Return the closing message of a completed run."""
    accuracy = final_accuracy(record)
    acc_text = f", final accuracy {accuracy:.2%}" if accuracy is not None else ""
    return (f"done: run {record['run'].get('run_id')} finished "
            f"{len(record.get('rounds') or [])} rounds{acc_text}; outputs in {run_dir}")
