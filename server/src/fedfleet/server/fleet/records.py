"""The server's run records, read for ``fleet status``: last round and share per node."""

from __future__ import annotations

from pathlib import Path

from fedfleet.shared.recordview import RecordView, number
from fedfleet.shared.runrecord import RunRecord, read_record


def newest_records(outputs: Path | None, runs: int = 5) -> list[RunRecord]:
    """Return the records of the ``runs`` newest runs in ``outputs``, oldest first."""
    if outputs is None or not outputs.is_dir():
        return []
    paths = sorted(outputs.glob("run-*/metrics.json"), key=lambda p: p.stat().st_mtime)
    records = (read_record(path.parent) for path in paths[-runs:])
    return [record for record in records if record is not None]


def last_rounds(outputs: Path | None, runs: int = 5,
                records: list[RunRecord] | None = None) -> dict[str, tuple[int, int]]:
    """Return, per node ID, the newest (run ID, round) it sent a training reply for.

    Reads the ``metrics.json`` of the ``runs`` newest runs in the server's output dir
    (or looks at ``records``, already read by :func:`newest_records`).
    """
    found: dict[str, tuple[float, int, int]] = {}  # node -> (run start, round, run ID)
    for record in newest_records(outputs, runs) if records is None else records:
        run_id = int(record["run"].get("run_id", 0))
        started = float(record["run"].get("started_at", 0.0))
        for row in record["rounds"]:
            for client in row.get("clients", []):
                if client.get("weight") is None:  # no accepted training reply
                    continue
                node = str(client["node_id"])
                entry = (started, int(row.get("round", 0)), run_id)
                if node not in found or entry[:2] > found[node][:2]:
                    found[node] = entry
    return {node: (run_id, rnd) for node, (_, rnd, run_id) in found.items()}


def participation(records: list[RunRecord]) -> dict[str, tuple[int, int, int]]:
    """Return per node ID (run ID, rounds contributed to, rounds asked in).

    From the newest of ``records`` (oldest first, as :func:`newest_records` returns
    them) that asked the node to train; older records without ``participation`` are
    counted from their rounds.
    """
    found: dict[str, tuple[float, int, int, int]] = {}
    for record in records:
        view = RecordView(record)
        started = number(view.info.get("started_at")) or 0.0
        run_id = int(number(view.info.get("run_id")) or 0)
        for node, entry in view.participation().items():
            if node not in found or started >= found[node][0]:
                found[node] = (started, run_id, entry["contributed"], entry["asked"])
    return {node: (run_id, given, asked)
            for node, (_, run_id, given, asked) in found.items()}
