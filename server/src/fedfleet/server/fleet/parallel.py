"""Run a job on many devices at once, and show one live line per device.

On a terminal the lines are redrawn in place; otherwise (logs, CI) every change is
printed as its own ``NAME: text`` line. A device that fails is reported with its
reason and does not stop the others.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TypeVar

from fedfleet.server.fleet.common import Outcome
from fedfleet.shared.errors import FedfleetError

log = logging.getLogger("fedfleet")


class Board:
    """One status line per device."""

    def __init__(self, names: Sequence[str], stream: IO[str] | None = None,
                 live: bool | None = None) -> None:
        """Lines for ``names``; ``live`` (default: ``stream`` is a terminal) redraws them."""
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.width = max((len(n) for n in names), default=4)
        self.lines = dict.fromkeys(names, "waiting")
        self._lock = threading.Lock()
        self._drawn = 0

    def say(self, name: str, text: str) -> None:
        """Set ``name``'s line to ``text``."""
        with self._lock:
            self.lines[name] = text
            if self.live:
                self._redraw()
            else:
                self.stream.write(f"{name:<{self.width}}  {text}\n")
                self.stream.flush()

    def _redraw(self) -> None:
        out = f"\x1b[{self._drawn}F" if self._drawn else ""
        for name, text in self.lines.items():
            out += f"\x1b[2K{name:<{self.width}}  {text}"[:400] + "\n"
        self.stream.write(out)
        self.stream.flush()
        self._drawn = len(self.lines)


Job = Callable[[str, Callable[[str], None]], Outcome]
T = TypeVar("T")


def each(names: Sequence[str], work: Callable[[str], T], parallel: int) -> list[T]:
    """Return ``work(name)`` for every name, in order, ``parallel`` at a time."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(work, names))


def run_all(names: Sequence[str], job: Job, parallel: int, board: Board) -> list[Outcome]:
    """Run ``job(name, say)`` for every device, ``parallel`` at a time; never raise."""
    def one(name: str) -> Outcome:
        started = time.monotonic()

        def say(text: str) -> None:
            board.say(name, text)

        try:
            outcome = job(name, say)
        except FedfleetError as err:
            outcome = Outcome(name, False, False, str(err))
        except Exception as err:  # one device must not end the others
            log.debug("device %s", name, exc_info=True)
            outcome = Outcome(name, False, False, f"unexpected {type(err).__name__}: {err}")
        outcome.seconds = time.monotonic() - started
        board.say(name, f"{'OK' if outcome.ok else 'FAILED'}  {outcome.summary} "
                        f"[{outcome.seconds:.0f}s]")
        return outcome

    return each(names, one, parallel)
