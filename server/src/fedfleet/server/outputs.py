"""A run's output directory: metrics as JSON and CSV, checkpoints, the final model."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from fedfleet.shared.atomic import save_atomic, write_atomic
from fedfleet.shared.constants import CHECKPOINT_DIR, FINAL_MODEL, METRICS_CSV, METRICS_JSON

CSV_COLUMNS = [
    "round", "wall_s", "train_replies", "train_failures", "train_loss",
    "train_accuracy", "eval_replies", "eval_loss", "eval_accuracy",
    "central_loss", "central_accuracy", "max_client_train_s",
]


class RunOutputs:
    """Writes one run's files, each replaced atomically so readers never see half a file."""

    def __init__(self, directory: Path) -> None:
        """Create ``directory`` and its checkpoint folder."""
        self.directory = directory
        (directory / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)

    @property
    def metrics_json(self) -> Path:
        """Return the path of the full metrics record."""
        return self.directory / METRICS_JSON

    @property
    def final_model(self) -> Path:
        """Return the path of the final model."""
        return self.directory / FINAL_MODEL

    def checkpoint(self, server_round: int) -> Path:
        """Return the checkpoint path of ``server_round``."""
        return self.directory / CHECKPOINT_DIR / f"round-{server_round:03d}.keras"

    def write_metrics(self, record: dict[str, Any]) -> None:
        """Write ``metrics.json`` (everything) and ``metrics.csv`` (one row per round)."""
        write_atomic(self.metrics_json, json.dumps(record, indent=1, default=float))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in record.get("rounds", []):
            writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
        write_atomic(self.directory / METRICS_CSV, buffer.getvalue())

    def save_model(self, model: Any, path: Path) -> None:
        """Save a Keras model to ``path`` atomically."""
        save_atomic(path, model.save)


def read_metrics(directory: Path) -> dict[str, Any] | None:
    """Return the metrics record in ``directory``, or None if there is none yet."""
    try:
        return json.loads((directory / METRICS_JSON).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
