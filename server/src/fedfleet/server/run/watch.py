"""What the ServerApp does with a run's record after each round and at the end.

One object, three calls, for the run loop:

    watch = RunWatch(outputs.directory, tensorboard_dir)
    watch.initial(record)                      # after round 0 (the initial model)
    watch.round_done(record, checkpoint_path)  # after each round's checkpoint is saved
    watch.run_done(record, final_model_path)   # after the final model is saved

Each call registers checkpoints in ``models.json`` (and, with ``--keep-checkpoints``,
removes old ones and marks them there), redraws the plots and writes the
TensorBoard scalars; ``run_done`` also writes ``report.html``. None of it may end a
training run: a failure is logged as a warning and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fedfleet.shared.recordview import as_record

log = logging.getLogger("fedfleet")

T = TypeVar("T")


class RunWatch:
    """Keeps a run's plots, report, registry and TensorBoard files up to date."""

    def __init__(self, run_dir: Path | None, tensorboard_dir: Path | None = None,
                 keep_checkpoints: int = 0) -> None:
        """Watch the run in ``run_dir`` (None: no files); TensorBoard into its own dir.

        ``keep_checkpoints`` > 0 prunes old checkpoints after each round (see
        :mod:`fedfleet.server.results.retention`).
        """
        self.run_dir = run_dir
        self.keep_checkpoints = keep_checkpoints
        self.tensorboard_dir = tensorboard_dir
        self._tensorboard: Any = None
        self.plot_seconds = 0.0

    def _safely(self, what: str, action: Callable[[], T]) -> T | None:
        try:
            return action()
        except Exception as err:  # never let bookkeeping end a training run
            log.warning("Could not %s: %s: %s", what, type(err).__name__, err)
            return None

    def _board(self) -> Any:
        if self._tensorboard is None and self.tensorboard_dir is not None:
            from fedfleet.server.results.tensorboard import TensorBoardLog

            self._tensorboard = TensorBoardLog(self.tensorboard_dir)
        return self._tensorboard

    def _plots(self, record: Mapping[str, Any]) -> list[Path]:
        if self.run_dir is None:
            return []
        from fedfleet.server.results.plots import write_plots

        started = time.perf_counter()
        files = write_plots(self.run_dir, record)
        self.plot_seconds = time.perf_counter() - started
        return files

    def _prune(self, run_dir: Path, rows: list[dict[str, Any]]) -> None:
        from fedfleet.server.results.retention import prune_checkpoints
        from fedfleet.shared.registry import mark_removed

        pruned = prune_checkpoints(run_dir, rows, self.keep_checkpoints)
        mark_removed(run_dir, pruned.files,
                     f"retention: --keep-checkpoints {self.keep_checkpoints}")

    def initial(self, record: Mapping[str, Any]) -> None:
        """Record the initial model (round 0): TensorBoard step 0."""
        board = self._board()
        if board is not None:
            self._safely("write TensorBoard scalars",
                         lambda: board.write_initial(as_record(record).initial))

    def round_done(self, record: Mapping[str, Any], checkpoint: Path | None = None) -> None:
        """Register the round's checkpoint, redraw the plots, write TensorBoard scalars."""
        rows = as_record(record).rounds
        if not rows:
            return
        row = rows[-1]
        if checkpoint is not None and self.run_dir is not None and checkpoint.exists():
            from fedfleet.shared.registry import register_checkpoint

            run_dir = self.run_dir
            self._safely("register the checkpoint",
                         lambda: register_checkpoint(run_dir, row, checkpoint))
        if self.keep_checkpoints > 0 and self.run_dir is not None:
            run_dir = self.run_dir
            self._safely("prune old checkpoints", lambda: self._prune(run_dir, rows))
        self._safely("draw the plots", lambda: self._plots(record))
        board = self._board()
        if board is not None:
            self._safely("write TensorBoard scalars", lambda: board.write_round(row))

    def run_done(self, record: Mapping[str, Any], final_model: Path | None = None
                 ) -> Path | None:
        """Register the final model, draw the plots, write the report; return its path."""
        rows = as_record(record).rounds
        run_dir = self.run_dir
        if run_dir is not None and final_model is not None and final_model.exists() and rows:
            from fedfleet.shared.registry import register_checkpoint

            self._safely("register the final model",
                         lambda: register_checkpoint(run_dir, rows[-1], final_model))
        if self._tensorboard is not None:
            self._safely("close the TensorBoard log", self._tensorboard.close)
        if run_dir is None:
            return None
        from fedfleet.server.results.report import write_report

        plots = self._safely("draw the plots", lambda: self._plots(record))
        return self._safely("write the report", lambda: write_report(run_dir, record, plots))
