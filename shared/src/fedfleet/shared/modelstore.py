"""The models a device has received: ``HOME/models/`` and its ``index.json``.

At the end of a run the server sends every device that took part the final global
model; the device stores it as ``run-<id>-round-<NNN>.keras`` and ``.tflite`` (for
``fedfleet predict``) and lists it in ``index.json`` with run id, round, metrics,
class names and each file's sha256. Files are written first, each atomically; the
index is updated last, under a lock, so it never names a file that is not complete.

File names are made from integers only (the run id Flower gives the ClientApp and the
round), never from text the server sent.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedfleet.shared.atomic import write_json_atomic
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.fileio import locked, read_json, sha256_file

DEFAULT_HOME = Path.home() / ".fedfleet" / "client"
"""Default fedfleet home of a device (``fedfleet join --home``)."""

MODELS_DIR = "models"
INDEX_FILE = "index.json"
MAX_ROUND = 1_000_000
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_METRICS = 32
MAX_CLASS_NAMES = 10_000


def models_dir(home: Path) -> Path:
    """Return the models folder under a device's fedfleet home."""
    return home / MODELS_DIR


def model_stem(run_id: int, server_round: int) -> str:
    """Return the file name stem of a run's model: ``run-<id>-round-<NNN>``."""
    return f"run-{int(run_id)}-round-{int(server_round):03d}"


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep finite numbers under plain names (what a server sent is not trusted)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if len(out) >= MAX_METRICS:
            break
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(key, str) and _METRIC_NAME.match(key) and abs(float(value)) < 1e300:
            out[key] = float(value)
    return out


def read_index(home: Path) -> list[dict[str, Any]]:
    """Return the stored models' entries, oldest first ([] when there are none)."""
    data = read_json(models_dir(home) / INDEX_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return []
    return [m for m in data["models"] if isinstance(m, dict)]


def store_model(home: Path, run_id: int, server_round: int, keras_file: Path,
                tflite_file: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Move a received model's files into ``HOME/models`` and list them in the index.

    Parameters
    ----------
    home
        The device's fedfleet home.
    run_id, server_round
        The run (from Flower's context) and the round the model comes from.
    keras_file, tflite_file
        Finished files in the models folder (temporary names), moved into place.
    meta
        Extra fields for the entry: ``metrics``, ``model``, ``input_shape``,
        ``num_classes``, ``class_names``, ``weights_sha256``.

    Returns
    -------
    dict
        The index entry.

    Raises
    ------
    FedfleetError
        If the run id or round is not a plausible integer.
    """
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 0:
        raise FedfleetError(f"run id {run_id!r} is not a non-negative integer")
    if isinstance(server_round, bool) or not isinstance(server_round, int) or \
            not 0 <= server_round <= MAX_ROUND:
        raise FedfleetError(f"round {server_round!r} is not an integer in 0..{MAX_ROUND}")
    folder = models_dir(home)
    stem = model_stem(run_id, server_round)
    files = {"keras": folder / f"{stem}.keras", "tflite": folder / f"{stem}.tflite"}
    os.replace(keras_file, files["keras"])
    os.replace(tflite_file, files["tflite"])
    entry = {
        "run_id": run_id, "round": server_round, "stored_at": time.time(),
        "files": {kind: path.name for kind, path in files.items()},
        "sha256": {kind: sha256_file(path) for kind, path in files.items()},
        "bytes": {kind: path.stat().st_size for kind, path in files.items()},
        **{k: v for k, v in meta.items() if k not in ("files", "sha256", "bytes")},
    }
    with locked(folder / f".{INDEX_FILE}.lock"):
        models = [m for m in read_index(home)
                  if (m.get("run_id"), m.get("round")) != (run_id, server_round)]
        models.append(entry)
        write_json_atomic(folder / INDEX_FILE, {"models": models})
    return entry


def newest(home: Path) -> dict[str, Any] | None:
    """Return the most recently stored model's entry, or None."""
    models = read_index(home)
    return max(models, key=lambda m: float(m.get("stored_at") or 0)) if models else None


def model_path(home: Path, entry: Mapping[str, Any], kind: str = "tflite") -> Path:
    """Return the path of an entry's ``kind`` file (``keras`` or ``tflite``).

    Raises
    ------
    FedfleetError
        If the index names a file outside the models folder (a tampered index).
    """
    files = entry.get("files")
    name = str(files.get(kind, "")) if isinstance(files, Mapping) else ""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise FedfleetError(f"{models_dir(home) / INDEX_FILE}: entry of run "
                            f"{entry.get('run_id')} has no usable {kind} file name")
    return models_dir(home) / name


def entry_for(home: Path, model: Path) -> dict[str, Any] | None:
    """Return the index entry that lists the file ``model``, if it is in ``home``."""
    if model.resolve().parent != models_dir(home).resolve():
        return None
    for entry in read_index(home):
        files = entry.get("files")
        if isinstance(files, Mapping) and model.name in files.values():
            return entry
    return None


def verify(home: Path, entry: Mapping[str, Any]) -> dict[str, str]:
    """Return ``kind -> ok | missing | MISMATCH`` for an entry's files."""
    digests = entry.get("sha256")
    out = {}
    for kind in ("keras", "tflite"):
        try:
            path = model_path(home, entry, kind)
        except FedfleetError:
            out[kind] = "missing"
            continue
        if not path.is_file():
            out[kind] = "missing"
        elif not isinstance(digests, Mapping) or sha256_file(path) != digests.get(kind):
            out[kind] = "MISMATCH"
        else:
            out[kind] = "ok"
    return out
