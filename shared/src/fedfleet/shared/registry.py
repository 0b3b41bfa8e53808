"""A run's model registry: ``RUN_DIR/models.json``.

One entry per checkpoint: the file (relative to the run folder), its sha256 and
size, the round, that round's metrics, and the devices (node ids) whose updates went
into it. The server calls :func:`register_checkpoint` after saving each checkpoint;
``fedfleet models RUN_DIR`` lists the entries and verifies the digests. The file is
updated under a lock and replaced atomically.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedfleet.shared.atomic import write_json_atomic
from fedfleet.shared.constants import CHECKPOINT_DIR, FINAL_MODEL
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.fileio import locked, read_json, sha256_file
from fedfleet.shared.recordview import RecordView, contributors, number

REGISTRY_FILE = "models.json"
METRIC_KEYS = ("central_accuracy", "central_loss", "eval_accuracy", "eval_loss",
               "train_accuracy", "train_loss")
"""Round metrics copied into each entry."""


def _relative(run_dir: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        raise FedfleetError(f"{path} is not inside the run folder {run_dir}; "
                            "register only the run's own checkpoints") from None


def make_entry(run_dir: Path, round_row: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Return the registry entry of the checkpoint ``path`` of ``round_row``."""
    metrics = {k: number(round_row.get(k)) for k in METRIC_KEYS}
    return {
        "round": int(number(round_row.get("round")) or 0),
        "file": _relative(run_dir, path),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "registered_at": time.time(),
        "final": path.name == FINAL_MODEL,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "nodes": contributors(round_row),
    }


def read_registry(run_dir: Path) -> list[dict[str, Any]] | None:
    """Return the entries of ``run_dir/models.json``, or None if there is no registry."""
    data = read_json(run_dir / REGISTRY_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return None
    return [m for m in data["models"] if isinstance(m, dict)]


def register_checkpoint(run_dir: Path, round_row: Mapping[str, Any], path: Path
                        ) -> dict[str, Any]:
    """Add (or replace) the entry of checkpoint ``path`` in ``run_dir/models.json``.

    Parameters
    ----------
    run_dir
        The run's output folder.
    round_row
        The round's row of the run record (``round``, metrics, ``clients``, ``errors``).
    path
        The checkpoint file, inside ``run_dir`` (e.g. ``checkpoints/round-003.keras``
        or ``final_model.keras``).

    Returns
    -------
    dict
        The entry written.
    """
    entry = make_entry(run_dir, round_row, path)
    with locked(run_dir / f".{REGISTRY_FILE}.lock"):
        models = [m for m in read_registry(run_dir) or [] if m.get("file") != entry["file"]]
        models.append(entry)
        models.sort(key=lambda m: (bool(m.get("final")), number(m.get("round")) or 0))
        write_json_atomic(run_dir / REGISTRY_FILE, {"models": models})
    return entry


def mark_removed(run_dir: Path, files: Iterable[str], reason: str) -> list[str]:
    """Mark the entries of ``files`` (relative to the run folder) as removed.

    The entries stay, with their digest and metrics, plus ``removed`` (``reason``)
    and ``removed_at``; checkpoint retention calls this after deleting files.

    Returns
    -------
    list of str
        The files whose entries were marked now (already marked ones are not).
    """
    wanted = set(files)
    if not wanted:
        return []
    marked: list[str] = []
    with locked(run_dir / f".{REGISTRY_FILE}.lock"):
        models = read_registry(run_dir)
        if models is None:
            return []
        for entry in models:
            if entry.get("file") in wanted and not entry.get("removed"):
                entry["removed"] = reason
                entry["removed_at"] = time.time()
                marked.append(str(entry["file"]))
        if marked:
            write_json_atomic(run_dir / REGISTRY_FILE, {"models": models})
    return marked


def entries_from_record(run_dir: Path, record: RecordView) -> list[dict[str, Any]]:
    """Return entries for the checkpoints a record names (for runs without a registry).

    They have no ``sha256`` (nothing recorded one when the files were written).
    """
    out = []
    for row in record.rounds:
        name = row.get("checkpoint")
        if isinstance(name, str) and name and "/" not in name and "\\" not in name:
            metrics = {k: number(row.get(k)) for k in METRIC_KEYS}
            out.append({"round": int(row["round"]),
                        "file": f"{CHECKPOINT_DIR}/{name}",
                        "metrics": {k: v for k, v in metrics.items() if v is not None},
                        "nodes": contributors(row), "final": False})
    if (run_dir / FINAL_MODEL).exists() and record.last_round is not None:
        last = dict(out[-1]) if out else {"round": record.last_round, "metrics": {},
                                          "nodes": []}
        out.append({**last, "file": FINAL_MODEL, "final": True})
    return out


def registry_entries(run_dir: Path, record: RecordView | None = None
                     ) -> tuple[list[dict[str, Any]], bool]:
    """Return the run's model entries and whether they come from ``models.json``."""
    entries = read_registry(run_dir)
    if entries is not None:
        return entries, True
    return (entries_from_record(run_dir, record) if record is not None else []), False


def verify_entry(run_dir: Path, entry: Mapping[str, Any]) -> str:
    """Return ``ok``, ``missing``, ``MISMATCH``, ``unrecorded``, ``outside`` or ``removed``.

    ``removed``: checkpoint retention deleted the file on purpose (the entry says so).
    """
    name = str(entry.get("file", ""))
    root = run_dir.resolve()
    path = (root / name).resolve()
    if not name or not path.is_relative_to(root):
        return "outside"
    if entry.get("removed") and not path.exists():
        return "removed"
    if not path.is_file():
        return "missing"
    if not entry.get("sha256"):
        return "unrecorded"
    return "ok" if sha256_file(path) == entry["sha256"] else "MISMATCH"
