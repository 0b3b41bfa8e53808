"""TensorBoard event files of a run: the same numbers as the plots, per round.

``TensorBoardLog(logdir).write_round(row)`` writes one round's scalars with
``tf.summary`` (TensorFlow is imported on first use; the ServerApp has it loaded
already). View them with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from fedfleet.shared.recordview import (
    RecordView,
    as_record,
    clients,
    device_metric,
    failures,
    number,
    rejected,
    timeouts,
)

ROUND_SCALARS: dict[str, str] = {
    "central_accuracy": "accuracy/central_test",
    "eval_accuracy": "accuracy/federated_eval",
    "train_accuracy": "accuracy/train",
    "central_loss": "loss/central_test",
    "eval_loss": "loss/federated_eval",
    "train_loss": "loss/train",
    "train_replies": "replies/aggregated",
    "wall_s": "time/round_s",
    "max_client_train_s": "time/slowest_client_train_s",
}
"""Record key of a round -> TensorBoard tag."""

CLIENT_SCALARS: dict[str, str] = {
    "eval_accuracy": "device_accuracy",
    "train_time_s": "device_train_time_s",
}
"""Client metric -> tag prefix; the tag is ``<prefix>/<node id>``."""


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """Return the tag -> value pairs of one round row (finite numbers only)."""
    out = {tag: number(row.get(key)) for key, tag in ROUND_SCALARS.items()}
    out.update({"replies/rejected": float(rejected(row)),
                "replies/failed": float(failures(row)),
                "replies/timed_out": float(timeouts(row))})
    for client in clients(row):
        for key, prefix in CLIENT_SCALARS.items():
            out[f"{prefix}/{client['node_id']}"] = number(device_metric(client, key))
    return {tag: value for tag, value in out.items() if value is not None}


class TensorBoardLog:
    """Writes a run's rounds as TensorBoard scalars into ``logdir``."""

    def __init__(self, logdir: Path) -> None:
        """Remember ``logdir``; the event file is created on the first write."""
        self.logdir = logdir
        self._writer: Any = None

    def _summary(self) -> Any:
        import tensorflow as tf

        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.logdir))
        return tf.summary

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Write ``scalars`` at ``step`` and flush, so TensorBoard shows them at once."""
        summary = self._summary()
        with self._writer.as_default(step=step):
            for tag, value in scalars.items():
                summary.scalar(tag, value)
        self._writer.flush()

    def write_initial(self, initial: Mapping[str, Any]) -> None:
        """Write the initial model's centralized metrics at step 0."""
        scalars = {"accuracy/central_test": number(initial.get("accuracy")),
                   "loss/central_test": number(initial.get("loss"))}
        clean = {k: v for k, v in scalars.items() if v is not None}
        if clean:
            self.write_scalars(0, clean)

    def write_round(self, row: Mapping[str, Any]) -> None:
        """Write one finished round (a row of the run record) at step ``round``."""
        step = number(row.get("round"))
        if step is None:
            return
        self.write_scalars(int(step), round_scalars(row))

    def write_record(self, record: RecordView | Mapping[str, Any]) -> int:
        """Write a whole record (initial model and every round); return the rounds written."""
        run = as_record(record)
        self.write_initial(run.initial)
        for row in run.rounds:
            self.write_round(row)
        return len(run.rounds)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
