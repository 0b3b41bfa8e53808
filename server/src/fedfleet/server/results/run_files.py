"""A run's folder: the record as JSON and CSV, checkpoints, strategy state, final model.

Every file is replaced atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedfleet.shared.atomic import save_atomic, write_atomic
from fedfleet.shared.constants import CHECKPOINT_DIR, FINAL_MODEL, METRICS_CSV, METRICS_JSON
from fedfleet.shared.runrecord import RunRecord, csv_columns


class RunFiles:
    """The files of the run in ``directory``."""

    def __init__(self, directory: Path) -> None:
        """Create ``directory`` and its checkpoint folder."""
        self.directory = directory
        (directory / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def metrics_json(self) -> Path:
        """Return the path of the full record."""
        return self.directory / METRICS_JSON

    @property
    def final_model(self) -> Path:
        """Return the path of the final model."""
        return self.directory / FINAL_MODEL

    def checkpoint(self, run_round: int) -> Path:
        """Return the path of the global model after ``run_round``."""
        return checkpoint_path(self.directory, run_round)

    def state(self, run_round: int) -> Path:
        """Return the path of the strategy's state after ``run_round``."""
        return state_path(self.directory, run_round)

    def write_record(self, record: RunRecord, columns: Sequence[str] | None = None
                     ) -> None:
        """Write ``metrics.json`` (everything) and ``metrics.csv`` (one row per round).

        ``columns``: the CSV's (default :func:`~fedfleet.shared.runrecord.csv_columns`).
        """
        write_atomic(self.metrics_json, json.dumps(record, indent=1, default=float))
        names = list(columns or csv_columns())
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        for row in record.get("rounds", []):
            values: dict[str, Any] = dict(row)
            writer.writerow({k: values.get(k, "") for k in names})
        write_atomic(self.directory / METRICS_CSV, buffer.getvalue())

    def save_model(self, model: Any, path: Path) -> None:
        """Save a Keras model to ``path`` atomically."""
        save_atomic(path, model.save)


def checkpoint_path(run_dir: Path, run_round: int) -> Path:
    """Return where the global model after ``run_round`` is kept."""
    return run_dir / CHECKPOINT_DIR / f"round-{run_round:03d}.keras"


def state_path(run_dir: Path, run_round: int) -> Path:
    """Return where the strategy state after ``run_round`` is kept."""
    return run_dir / CHECKPOINT_DIR / f"round-{run_round:03d}.state.npz"
