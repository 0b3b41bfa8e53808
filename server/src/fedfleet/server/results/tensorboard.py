"""TensorBoard event files of a run: the same numbers as the plots, per round.

Which numbers, under which tags, is the metric catalog's (:mod:`fedfleet.shared.metrics`).

``TensorBoardLog(logdir).write_round(row)`` writes one round's scalars with
``tf.summary`` (TensorFlow is imported on first use; the ServerApp has it loaded
already). View them with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from fedfleet.shared.metrics import CATALOG, Catalog
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


def round_scalars(row: Mapping[str, Any], catalog: Catalog = CATALOG) -> dict[str, float]:
    """Return the tag -> value pairs of one round row (finite numbers only).

    The catalog names the tags: ``round_tag`` for a round's value, ``device_tag``
    (``<prefix>/<node id>``) for each device's.
    """
    out = {m.round_tag: number(row.get(m.round_key)) for m in catalog
           if m.round_tag and m.round_key}
    out.update({"replies/rejected": float(rejected(row)),
                "replies/failed": float(failures(row)),
                "replies/timed_out": float(timeouts(row))})
    for client in clients(row):
        for metric in catalog:
            if metric.device_tag:
                out[f"{metric.device_tag}/{client['node_id']}"] = number(
                    device_metric(client, metric.name))
    return {tag: value for tag, value in out.items() if value is not None}


class TensorBoardLog:
    """Writes a run's rounds as TensorBoard scalars into ``logdir``."""

    def __init__(self, logdir: Path, catalog: Catalog = CATALOG) -> None:
        """Remember ``logdir``; the event file is created on the first write."""
        self.logdir = logdir
        self.catalog = catalog
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
        scalars = {m.round_tag: number(initial.get(m.initial)) for m in self.catalog
                   if m.round_tag and m.initial}
        clean = {k: v for k, v in scalars.items() if v is not None}
        if clean:
            self.write_scalars(0, clean)

    def write_round(self, row: Mapping[str, Any]) -> None:
        """Write one finished round (a row of the run record) at step ``round``."""
        step = number(row.get("round"))
        if step is None:
            return
        self.write_scalars(int(step), round_scalars(row, self.catalog))

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
