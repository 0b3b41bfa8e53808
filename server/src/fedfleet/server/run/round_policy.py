"""When a round may start, when clients evaluate, and when a round's outcome ends the run.

- A round starts once ``--min-clients`` devices are connected, waiting at most
  ``--client-wait-timeout`` (Flower's own sampling would wait forever).
- Clients evaluate in a separate message only when needed: with ``client-eval =
  with-train`` the next train message carries the evaluation, so only the last round
  sends one; never after a round in which nobody could train.
- A round that ends with fewer than ``--min-replies`` usable replies ends the run
  with every client's reason; the global model of that round is not changed.

How long a round collects replies (quorum, grace, deadline) is the grid's part:
:class:`fedfleet.server.run.grid.PromptGrid`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flwr.serverapp import Grid

from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.runrecord import ErrorRow, RoundRow
from fedfleet.shared.settings import RunSettings

log = logging.getLogger("fedfleet")


@dataclass(frozen=True)
class RoundPolicy:
    """The run settings that decide the above (defaults: :class:`RunSettings`')."""

    num_rounds: int = RunSettings.num_rounds
    min_clients: int = RunSettings.min_clients
    client_wait_timeout: float = RunSettings.client_wait_timeout
    min_replies: int = RunSettings.min_replies
    client_eval: str = RunSettings.client_eval

    @classmethod
    def from_settings(cls, settings: RunSettings) -> RoundPolicy:
        """Return the policy of a run."""
        return cls(settings.num_rounds, settings.min_clients,
                   settings.client_wait_timeout, settings.min_replies,
                   settings.client_eval)

    def wait_for_clients(self, grid: Grid) -> int:
        """Wait until ``min_clients`` clients are connected; return how many are.

        Raises
        ------
        FedfleetError
            If fewer are connected after ``client_wait_timeout`` seconds.
        """
        deadline = time.monotonic() + self.client_wait_timeout
        last = -1
        while True:
            connected = len(list(grid.get_node_ids()))
            if connected >= self.min_clients:
                return connected
            if time.monotonic() >= deadline:
                raise FedfleetError(
                    f"only {connected} of the {self.min_clients} clients needed were "
                    f"connected after {self.client_wait_timeout:.0f}s; start more "
                    "clients or lower --min-clients")
            if connected != last:
                log.info("Waiting for clients: %d connected, %d needed", connected,
                         self.min_clients)
                last = connected
            time.sleep(1.0)

    def can_aggregate(self, usable_replies: int) -> bool:
        """Return whether a round with this many usable replies changes the model."""
        return usable_replies >= max(1, self.min_replies)

    def evaluate_on_clients(self, run_round: int, train_replies: int) -> bool:
        """Return whether this round sends Flower's separate evaluate message."""
        if not train_replies:
            return False
        return self.client_eval != "with-train" or run_round >= self.num_rounds

    def check(self, row: RoundRow) -> None:
        """End the run if the finished round had too few usable replies.

        Raises
        ------
        FedfleetError
            Naming every client's reason.
        """
        replies = row.get("train_replies", 0)
        if replies >= self.min_replies:
            return
        reasons = _reasons(row.get("errors", []))
        if replies == 0:
            raise FedfleetError(f"no client could train in round {row.get('round')}: "
                                f"{reasons or 'no replies before the round timeout'}")
        raise FedfleetError(
            f"round {row.get('round')} got {replies} usable replies, fewer than "
            f"--min-replies {self.min_replies}{': ' + reasons if reasons else ''}; "
            "the global model was not changed")


def _reasons(errors: list[ErrorRow], named: int = 3) -> str:
    """Return the errors as one line, grouped by reason (a fleet can have hundreds).

    ``node 7: rejected: NaN`` for a reason one device gave; ``98 devices (node 1, node
    2, node 3 and 95 more): no reply by the deadline`` for one many gave. The round's
    row in the record keeps every device's own entry.
    """
    groups: dict[str, list[str]] = {}
    for e in errors:
        groups.setdefault(str(e["error"]), []).append(str(e["node_id"]))
    parts = []
    for reason, nodes in groups.items():
        if len(nodes) == 1:
            parts.append(f"node {nodes[0]}: {reason}")
            continue
        names = ", ".join(f"node {n}" for n in nodes[:named])
        more = f" and {len(nodes) - named} more" if len(nodes) > named else ""
        parts.append(f"{len(nodes)} devices ({names}{more}): {reason}")
    return "; ".join(parts)
