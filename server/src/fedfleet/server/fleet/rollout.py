"""Deploy to every device at once, or roll out in batches that stop at the first failure."""

from __future__ import annotations

from collections.abc import Sequence

from fedfleet.server.fleet.common import Outcome
from fedfleet.server.fleet.parallel import Board, Job, run_all

STOPPED = "not updated: the rollout stopped"


def rollout(names: Sequence[str], job: Job, batch: int, board: Board) -> list[Outcome]:
    """Run ``job`` on ``batch`` devices at a time; after a failed batch, stop.

    The devices not reached are reported as failed, with the reason on their line.
    """
    outcomes: list[Outcome] = []
    for start in range(0, len(names), batch):
        outcomes += run_all(names[start:start + batch], job, batch, board)
        if not all(o.ok for o in outcomes):
            for name in names[start + batch:]:
                board.say(name, STOPPED)
                outcomes.append(Outcome(name, False, False,
                                        f"{STOPPED} at a failed device"))
            break
    return outcomes


def summary(outcomes: Sequence[Outcome], verb: str) -> tuple[str, str | None]:
    """Return the closing line (``N of M devices VERB``) and the failure line, if any."""
    failed = [o for o in outcomes if not o.ok]
    changed = sum(o.changed for o in outcomes)
    line = f"{len(outcomes) - len(failed)} of {len(outcomes)} devices {verb} ({changed} changed)"
    if not failed:
        return line, None
    return line, (f"{len(failed)} of {len(outcomes)} devices failed: "
                  f"{', '.join(o.device for o in failed)} (reasons above)")
