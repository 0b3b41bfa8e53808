"""Checkpoint retention: after each round keep the newest N checkpoints and the best one.

``--keep-checkpoints N`` (run setting ``keep-checkpoints``; 0, the default, keeps every
checkpoint as before) bounds a long run's ``checkpoints/`` folder. After each round
the folder keeps:

- the checkpoints of the newest ``N`` rounds present, which include the last round
  (the one an interrupted run resumes from, see :mod:`fedfleet.server.run.resume`);
- the best round: highest test-set accuracy (``central_accuracy``), or, in a run
  without a server test set, highest federated evaluation accuracy
  (``eval_accuracy``); the earliest round wins a tie, so the best does not move
  without a real improvement.

So it holds at most ``N + 1`` rounds. A round's checkpoint is two files,
``round-NNN.keras`` and ``round-NNN.state.npz``; both go together. Removed checkpoints
stay listed in ``models.json``, marked ``removed`` (with when and why), so their
digests and metrics remain on record; ``fedfleet models --verify`` reports them as
``removed``, not missing.

Only regular files named like checkpoints, directly inside the run's own
``checkpoints`` folder, are ever removed: the folder is opened without following a
symlink and each file is unlinked relative to it, so a symlink planted in place of the
folder or of a file never makes us delete anything outside it (a planted symlink is
left where it is).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfleet.shared.constants import CHECKPOINT_DIR
from fedfleet.shared.recordview import number

log = logging.getLogger("fedfleet")

CHECKPOINT_NAME = re.compile(r"round-(\d{3,9})\.(keras|state\.npz)")
"""The names :func:`fedfleet.server.results.run_files.checkpoint_path` and ``state_path`` give."""


@dataclass(frozen=True)
class Pruned:
    """What one retention pass kept and removed."""

    kept: tuple[int, ...]
    removed: tuple[int, ...]
    files: tuple[str, ...]
    """Removed files, relative to the run folder (``checkpoints/round-001.keras``)."""


def best_round(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """Return the round with the best accuracy (test set, else federated evaluation).

    Returns
    -------
    int or None
        The earliest round with the highest ``central_accuracy``; if no round has one,
        the same by ``eval_accuracy``; None if no round has either.
    """
    rows = list(rows)
    for key in ("central_accuracy", "eval_accuracy"):
        scored = [(value, int(number(row.get("round")) or 0)) for row in rows
                  if (value := number(row.get(key))) is not None]
        if scored:
            top = max(value for value, _ in scored)
            return min(r for value, r in scored if value == top)
    return None


def rounds_to_keep(present: Sequence[int], keep: int, best: int | None,
                   last: int | None = None) -> set[int]:
    """Return which of the ``present`` rounds stay.

    Parameters
    ----------
    present
        Rounds with a checkpoint file in the folder.
    keep
        How many of the newest rounds to keep; 0 keeps them all.
    best
        The best round (kept if present).
    last
        The run's last completed round (kept if present, whatever ``keep`` says).

    Returns
    -------
    set of int
        The rounds that must not be removed.
    """
    rounds = sorted(set(present))
    if keep <= 0:
        return set(rounds)
    kept = set(rounds[-keep:])
    kept.update(r for r in (best, last) if r is not None and r in rounds)
    return kept


def _open_folder(folder: Path) -> int | None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(folder, flags)
    except OSError as err:  # missing, or a symlink planted in its place
        log.warning("Not pruning checkpoints in %s: %s", folder, err.strerror)
        return None


def _checkpoint_files(fd: int) -> dict[int, list[str]]:
    """Return the regular checkpoint files in the open folder ``fd``, by round."""
    found: dict[int, list[str]] = {}
    for name in os.listdir(fd):
        match = CHECKPOINT_NAME.fullmatch(name)
        if match is None:
            continue
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            log.warning("Leaving %s in place: not a regular file", name)
            continue
        found.setdefault(int(match.group(1)), []).append(name)
    return found


def prune_checkpoints(run_dir: Path, rows: Sequence[Mapping[str, Any]], keep: int
                      ) -> Pruned:
    """Remove the checkpoints of ``run_dir`` that retention does not keep.

    Parameters
    ----------
    run_dir
        The run's folder (with ``checkpoints/``).
    rows
        The run record's rounds so far (for the best and the last round).
    keep
        ``--keep-checkpoints``: the newest rounds to keep; 0 keeps everything.

    Returns
    -------
    Pruned
        The rounds kept and removed and the files removed.
    """
    if keep <= 0:
        return Pruned((), (), ())
    fd = _open_folder(run_dir / CHECKPOINT_DIR)
    if fd is None:
        return Pruned((), (), ())
    try:
        files = _checkpoint_files(fd)
        last = int(number(rows[-1].get("round")) or 0) if rows else None
        kept = rounds_to_keep(list(files), keep, best_round(rows), last)
        removed: list[str] = []
        for run_round in sorted(set(files) - kept):
            for name in sorted(files[run_round]):
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                removed.append(f"{CHECKPOINT_DIR}/{name}")
    finally:
        os.close(fd)
    gone = tuple(sorted(set(files) - kept))
    if gone:
        log.info("Removed the checkpoints of round(s) %s (--keep-checkpoints %d; kept %s)",
                 ", ".join(map(str, gone)), keep, ", ".join(map(str, sorted(kept))))
    return Pruned(tuple(sorted(kept)), gone, tuple(removed))
