"""Follow a submitted run to its end: print each finished round, then a summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.server.control import Control
from fedfleet.server.record import RunRecord, read_record, round_line
from fedfleet.shared.errors import FedfleetError


@dataclass
class RunFollower:
    """Follows one run through its metrics file and the SuperLink's run status."""

    control: Control
    run_id: int
    output_dir: Path
    on_line: Callable[[str], None] = print
    status_every: float = 30.0  # a `flwr ls` costs ~1 s of CPU; the metrics file is primary
    seen: int = field(default=0, init=False)

    def follow(self, alive: Callable[[], bool] = lambda: True) -> RunRecord:
        """Print each finished round; return the final record.

        Raises
        ------
        FedfleetError
            If the run fails, or ends without a record, or the SuperLink exits.
        """
        run_dir = self.output_dir / f"run-{self.run_id}"
        last_status = time.monotonic()
        while True:
            record = read_record(run_dir)
            if record is not None:
                num_rounds = record["run"].get("num_rounds")
                for row in record["rounds"][self.seen:]:
                    self.on_line(round_line(row, num_rounds))
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
