"""A tolerant view of a run's record, for what draws or lists it.

The record's shape is :mod:`fedfleet.shared.runrecord`'s. Plots, the HTML report,
TensorBoard, the model registry and export read it through this view, so a key that
is missing (an older run), or a file somebody edited (NaN, a string, a huge number),
is handled in one place: every accessor returns a usable value or ``None``, never
raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedfleet.shared.constants import METRICS_JSON
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.fileio import read_json

_TIMEOUT = re.compile(r"time[d ]?\s*out|no reply|did not (reply|answer)", re.IGNORECASE)


def number(value: object) -> float | None:
    """Return ``value`` as a finite float, or None (booleans and text are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def count(value: object) -> int:
    """Return a count stored as a number or as a list of items; 0 otherwise."""
    if isinstance(value, list):
        return len(value)
    result = number(value)
    return int(result) if result is not None and result >= 0 else 0


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def errors(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the row's error entries (``phase``, ``node_id``, ``kind``, ``error``)."""
    return [{"phase": str(e.get("phase", "")), "node_id": str(e.get("node_id", "")),
             "kind": str(e.get("kind", "")), "error": str(e.get("error", ""))}
            for e in _dicts(row.get("errors"))]


def rejected(row: Mapping[str, Any]) -> int:
    """Return how many replies the round rejected (checked and left out)."""
    if "rejected_replies" in row:
        return count(row["rejected_replies"])
    return sum(1 for e in errors(row) if e["kind"] == "rejected"
               or e["error"].startswith("rejected: "))


def timeouts(row: Mapping[str, Any]) -> int:
    """Return how many clients did not answer the round in time.

    The record's ``no_reply`` count; for older records, the errors of kind
    ``deadline`` or whose text says the reply timed out.
    """
    if "no_reply" in row:
        return count(row["no_reply"])
    return sum(1 for e in errors(row) if e["kind"] == "deadline" or (
        _TIMEOUT.search(e["error"]) and not e["error"].startswith("rejected: ")))


def failures(row: Mapping[str, Any]) -> int:
    """Return the round's failed train replies that were neither rejected nor timeouts."""
    total = count(row["train_failures"]) if "train_failures" in row else len(
        [e for e in errors(row) if e["phase"] in ("", "train")])
    return max(total - rejected(row) - timeouts(row), 0)


def clients(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the row's per-client entries that name a node."""
    return [c for c in _dicts(row.get("clients")) if c.get("node_id") not in (None, "")]


def device_metric(client: Mapping[str, Any], key: str) -> object:
    """Return a client's value of ``key``: the server's field, else what it reported."""
    if key in client:
        return client[key]
    device = client.get("device")
    return device.get(key) if isinstance(device, Mapping) else None


def contributors(row: Mapping[str, Any]) -> list[str]:
    """Return the node ids whose updates went into the round's model, sorted.

    The clients the intake gave a ``weight`` in the average (only accepted train
    replies get one) and that have no train error in that round.
    """
    failed = {e["node_id"] for e in errors(row) if e["phase"] in ("", "train")}
    return sorted({str(c["node_id"]) for c in clients(row)
                   if number(c.get("weight")) is not None
                   and str(c["node_id"]) not in failed})


def asked(row: Mapping[str, Any]) -> list[str]:
    """Return the node ids the round's train message went to, sorted.

    The contributors and every node with a train error (failed, rejected, no reply).
    """
    failed = {e["node_id"] for e in errors(row) if e["phase"] in ("", "train")
              and e["node_id"]}
    return sorted(failed | set(contributors(row)))


def _participation_entry(value: object) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    last = number(value.get("last_contributed"))
    return {"asked": count(value.get("asked")),
            "contributed": count(value.get("contributed")),
            "missed_in_a_row": count(value.get("missed_in_a_row")),
            "last_contributed": int(last) if last is not None else None}


def participation_from_rounds(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return per node its rounds asked and contributed, counted from the round rows."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        given = set(contributors(row))
        for node in asked(row):
            entry = out.setdefault(node, {"asked": 0, "contributed": 0,
                                          "missed_in_a_row": 0, "last_contributed": None})
            entry["asked"] += 1
            if node in given:
                entry["contributed"] += 1
                entry["missed_in_a_row"] = 0
                entry["last_contributed"] = int(row["round"])
            else:
                entry["missed_in_a_row"] += 1
    return out


@dataclass(frozen=True)
class RecordView:
    """One run's record with tolerant accessors; ``data`` is the raw dict."""

    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> Mapping[str, Any]:
        """Return the ``run`` section (id, start time, settings, model size)."""
        run = self.data.get("run")
        return run if isinstance(run, Mapping) else {}

    @property
    def run_id(self) -> str | None:
        """Return the run id as text, or None."""
        value = self.info.get("run_id")
        return None if value is None else str(value)

    @property
    def status(self) -> str:
        """Return the status (``running``, ``completed``, ``failed``, ...) or ``unknown``."""
        return str(self.data.get("status") or "unknown")

    @property
    def settings(self) -> Mapping[str, Any]:
        """Return the run settings (run-config keys such as ``eval-data``)."""
        settings = self.info.get("settings")
        return settings if isinstance(settings, Mapping) else {}

    def setting(self, key: str, default: Any = None) -> Any:
        """Return one run setting, e.g. ``setting("eval-data", "builtin:digits")``."""
        return self.settings.get(key, default)

    @property
    def initial(self) -> Mapping[str, Any]:
        """Return the initial model's centralized metrics (``loss``, ``accuracy``)."""
        initial = self.data.get("initial")
        return initial if isinstance(initial, Mapping) else {}

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """Return the rows that have an integer ``round``, ordered by round."""
        rows = [r for r in _dicts(self.data.get("rounds"))
                if isinstance(r.get("round"), int) and not isinstance(r["round"], bool)]
        return sorted(rows, key=lambda r: int(r["round"]))

    def row(self, server_round: int) -> dict[str, Any] | None:
        """Return the row of ``server_round``, or None."""
        return next((r for r in self.rounds if r["round"] == server_round), None)

    @property
    def last_round(self) -> int | None:
        """Return the number of the last finished round, or None."""
        rows = self.rounds
        return int(rows[-1]["round"]) if rows else None

    def series(self, key: str) -> list[tuple[int, float]]:
        """Return ``(round, value)`` for every round with a finite number under ``key``."""
        points = []
        for row in self.rounds:
            value = number(row.get(key))
            if value is not None:
                points.append((int(row["round"]), value))
        return points

    def node_ids(self) -> list[str]:
        """Return every node id that appears in any round, in first-seen order."""
        seen: dict[str, None] = {}
        for row in self.rounds:
            for client in clients(row):
                seen.setdefault(str(client["node_id"]), None)
        return list(seen)

    def participation(self) -> dict[str, dict[str, Any]]:
        """Return per node: ``asked``, ``contributed``, ``missed_in_a_row``, ``last_contributed``.

        The record's ``participation``; for a record without one (written before it
        existed), counted from the rounds' clients and train errors.
        """
        book = self.data.get("participation")
        if not isinstance(book, Mapping):
            return participation_from_rounds(self.rounds)
        out = {}
        for node, value in book.items():
            entry = _participation_entry(value)
            if entry is not None and str(node):
                out[str(node)] = entry
        return out

    def straggler_rounds(self, default: int = 3) -> int:
        """Return the run's ``straggler-rounds`` setting (``default`` if absent)."""
        value = number(self.setting("straggler-rounds"))
        return int(value) if value is not None and value >= 1 else default

    def client_series(self, key: str) -> dict[str, list[tuple[int, float]]]:
        """Return per node: ``(round, value)`` of a client metric such as ``train_time_s``."""
        out: dict[str, list[tuple[int, float]]] = {}
        for row in self.rounds:
            for client in clients(row):
                value = number(device_metric(client, key))
                if value is not None:
                    out.setdefault(str(client["node_id"]), []).append(
                        (int(row["round"]), value))
        return out


def as_record(record: RecordView | Mapping[str, Any] | None) -> RecordView:
    """Wrap a raw record dict (or None) as a :class:`RecordView`."""
    if isinstance(record, RecordView):
        return record
    return RecordView(record if isinstance(record, Mapping) else {})


def load_record(run_dir: Path) -> RecordView:
    """Read ``RUN_DIR/metrics.json``.

    Raises
    ------
    FedfleetError
        If the folder has no readable record.
    """
    data = read_json(run_dir / METRICS_JSON)
    if not isinstance(data, dict):
        problem = "does not exist" if not run_dir.exists() else \
            f"has no readable {METRICS_JSON}"
        raise FedfleetError(f"{run_dir} {problem}: give a run folder such as "
                            "outputs/run-<id> (fedfleet runs lists the runs)")
    return RecordView(data)
