"""A run shown live on a terminal: the round in flight, its devices, the finished rounds.

:func:`frame` turns a run's record and the round in flight into lines;
:class:`LiveView` redraws them in place (ANSI cursor movement). Used by
``fedfleet server`` and ``fedfleet run`` when their output is a terminal; otherwise
they print one plain line per finished round, as before.

Each device of the round in flight shows the train rounds it contributed to of those
it was asked in (the record's ``participation``), and a line names the devices that
contributed to none of the last ``straggler-rounds`` rounds they were asked in.
"""

from __future__ import annotations

import statistics
import time
from typing import TextIO

from fedfleet.server.run.progress import RoundProgress
from fedfleet.shared.recordview import RecordView
from fedfleet.shared.runrecord import RoundRow, RunRecord

TABLE_ROUNDS = 12
"""Finished rounds shown in the table (the newest)."""
DEVICES_SHOWN = 16
"""Devices listed one per line; beyond that, counted by state."""
STRAGGLERS_SHOWN = 5
"""Straggling devices named; beyond that, counted."""


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _replies(row: RoundRow) -> str:
    text = str(row.get("train_replies", 0))
    rejected, silent = row.get("rejected_replies") or 0, row.get("no_reply") or 0
    failed = (row.get("train_failures") or 0) - rejected - silent
    extra = [f"{n} {what}" for n, what in ((rejected, "rej"), (silent, "silent"),
                                           (failed, "failed")) if n > 0]
    return text + (f" ({', '.join(extra)})" if extra else "")


def estimate_left(record: RunRecord, progress: RoundProgress | None,
                  now: float) -> float | None:
    """Return the seconds the run still needs: median round time x rounds to go."""
    rounds = record.get("rounds") or []
    total = record["run"].get("num_rounds") or 0
    walls = [r["wall_s"] for r in rounds if r.get("wall_s")]
    if not walls or not total:
        return None
    left = statistics.median(walls) * (total - len(rounds))
    if progress is not None and progress.get("round") == len(rounds) + 1:
        left -= min(now - progress["started_at"], statistics.median(walls))
    return max(0.0, left)


def frame(record: RunRecord | None, progress: RoundProgress | None, run_id: int,
          now: float | None = None) -> list[str]:
    """Return the lines that show the run now."""
    now = time.time() if now is None else now
    if record is None:
        return [f"run {run_id}: starting (waiting for its first record)"]
    info = record["run"]
    rounds = record.get("rounds") or []
    total = info.get("num_rounds") or 0
    status = record.get("status", "running")
    head = [f"run {run_id}"]
    in_flight = progress is not None and status == "running" and \
        progress.get("round", 0) > len(rounds)
    if in_flight and progress is not None:
        head.append(f"round {progress['round']}/{total} ({progress['phase']}, "
                    f"{_duration(now - progress['started_at'])} in)")
    else:
        head.append(f"{len(rounds)}/{total} rounds {status}")
    if info.get("started_at"):
        head.append(f"elapsed {_duration(now - info['started_at'])}")
    left = estimate_left(record, progress, now) if status == "running" else None
    if left is not None:
        head.append(f"about {_duration(left)} left")
    lines = [" · ".join(head)]
    view = RecordView(record)
    book = view.participation() if "participation" in record else {}
    if in_flight and progress is not None:
        lines += _devices(progress, now, book)
    lines += _stragglers(book, view.straggler_rounds())
    lines.append(f"{'round':>5}  {'time':>7}  {'replies':<16} {'train loss':>10}  "
                 f"{'client acc':>10}  {'test acc':>8}")
    if len(rounds) > TABLE_ROUNDS:
        lines.append(f"  ... {len(rounds) - TABLE_ROUNDS} earlier rounds in metrics.json")
    for row in rounds[-TABLE_ROUNDS:]:
        lines.append(f"{row.get('round', 0):>5}  {row.get('wall_s', 0):>6.1f}s  "
                     f"{_replies(row):<16} {_num(row.get('train_loss')):>10}  "
                     f"{_pct(row.get('eval_accuracy')):>10}  "
                     f"{_pct(row.get('central_accuracy')):>8}")
    return lines


def _devices(progress: RoundProgress, now: float,
             book: dict[str, dict[str, int]]) -> list[str]:
    devices = sorted(progress["devices"].items())
    working = _duration(now - progress["started_at"])
    if len(devices) <= DEVICES_SHOWN:
        return [(f"  node {node:<22} "
                 f"{state + (' ' + working if state == 'working' else ''):<16}"
                 f"{_rounds(book.get(node))}").rstrip()
                for node, state in devices]
    counts: dict[str, int] = {}
    for _, state in devices:
        counts[state] = counts.get(state, 0) + 1
    return ["  " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            + f" (of {len(devices)} devices asked)"]


def _rounds(entry: dict[str, int] | None) -> str:
    """Return "contributed to C of A rounds" for a device with a participation entry."""
    if not entry:
        return ""
    return f"contributed to {entry['contributed']} of {entry['asked']} rounds"


def _stragglers(book: dict[str, dict[str, int]], k: int) -> list[str]:
    """Return a line naming the devices that missed their last ``k`` rounds, if any."""
    late = sorted(node for node, entry in book.items() if entry["missed_in_a_row"] >= k)
    if not late:
        return []
    named = ", ".join(late[:STRAGGLERS_SHOWN])
    more = f" and {len(late) - STRAGGLERS_SHOWN} more" if len(late) > STRAGGLERS_SHOWN \
        else ""
    return [f"  ! contributed to none of the last {k} rounds they were asked in: "
            f"node {named}{more}"]


class LiveView:
    """Redraws :func:`frame` in place on ``stream`` (a terminal)."""

    def __init__(self, stream: TextIO, run_id: int) -> None:
        """Draw on ``stream``."""
        self.stream = stream
        self.run_id = run_id
        self._drawn = 0

    def show(self, record: RunRecord | None, progress: RoundProgress | None) -> None:
        """Replace the last frame with the current one."""
        lines = frame(record, progress, self.run_id)
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.stream.write(erase + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)
