"""Follow a submitted run to its end: each finished round as a line, or a live view.

The record (``metrics.json``) is the source; Flower's run status (``flwr ls``) is
asked now and then to notice a run that ended without finishing its record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.server.host.control import Control
from fedfleet.server.run.progress import RoundProgress, read_progress
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.runrecord import RunRecord, read_record, round_line


@dataclass
class RunFollower:
    """Follows one run through its metrics file and the SuperLink's run status."""

    control: Control
    run_id: int
    output_dir: Path
    on_line: Callable[[str], None] = print
    status_every: float = 30.0  # a `flwr ls` costs ~1 s of CPU; the metrics file is primary
    show: Callable[[RunRecord | None, RoundProgress | None], None] | None = None
    """A live view (:class:`fedfleet.server.host.live.LiveView`); then no lines are printed."""
    seen: int = field(default=0, init=False)

    def follow(self, alive: Callable[[], bool] = lambda: True) -> RunRecord:
        """Print each finished round (or redraw the live view); return the final record.

        Raises
        ------
        FedfleetError
            If the run fails, or ends without a record, or the SuperLink exits.
        """
        run_dir = self.output_dir / f"run-{self.run_id}"
        last_status = time.monotonic()
        while True:
            record = read_record(run_dir)
            if self.show is not None:
                self.show(record, read_progress(run_dir))
            elif record is not None:
                num_rounds = record["run"].get("num_rounds")
                for row in record["rounds"][self.seen:]:
                    self.on_line(round_line(row, num_rounds))
            if record is not None:
                self.seen = len(record["rounds"])
                if record.get("status") == "completed":
                    return record
                if record.get("status") == "failed":
                    raise FedfleetError(f"run {self.run_id} failed: {record.get('error')}")
            if not alive():
                raise FedfleetError("the SuperLink exited during the run; see its log")
            if time.monotonic() - last_status > self.status_every:
                last_status = time.monotonic()
                status = self.control.run(self.run_id)
                if str(status["status"]).startswith("finished"):
                    time.sleep(1.0)  # let the last metrics write land
                    record = read_record(run_dir)
                    if record is None or record.get("status") == "running":
                        details = status.get("status-details")
                        raise FedfleetError(
                            f"run {self.run_id} ended as {status['status']}"
                            f"{': ' + details if details else ''}"
                            " before it finished; see the SuperLink log")
                    continue
            time.sleep(1.0)
