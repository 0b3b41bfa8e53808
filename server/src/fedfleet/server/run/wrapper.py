"""fedfleet's round around any Flower strategy.

:class:`FedfleetStrategy` holds the strategy the run chose (FedAvg, FedMedian, ...)
the way Flower's own differential-privacy wrappers do, and does around it what every
fedfleet round needs; aggregation itself stays the inner strategy's:

1. ``configure_train``: start the round's row, wait (bounded) for enough clients, let
   the inner strategy sample them and build the instructions, encode the global
   weights for the wire (:mod:`~fedfleet.server.run.codec`).
2. ``aggregate_train``: every reply goes through the reply intake
   (:mod:`~fedfleet.server.run.intake`); only the messages it rebuilt reach the inner
   strategy, and only if the round policy says there are enough; the aggregate is
   cast back to the model's dtypes.
3. ``configure_evaluate`` / ``aggregate_evaluate``: the same for Flower's separate
   evaluate message, when the round policy asks for one.
4. :meth:`round_end` (Flower's ``evaluate_fn``, called after each round): test-set
   scores, checkpoint, strategy state, the round's row, plots/registry/TensorBoard
   (:mod:`~fedfleet.server.run.watch`), then the round policy's check.

Round numbers: Flower counts this process's rounds from 1; a continuation of an
interrupted run starts after ``offset`` rounds. Everything here and below works in
run rounds (``offset + Flower's round``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.app.typing import MetricRecordValues
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedfleet.server.run.codec import WeightCodec
from fedfleet.server.run.intake import Intake
from fedfleet.server.run.progress import ProgressFile
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.server.run.resume import save_strategy_state
from fedfleet.server.run.round_policy import RoundPolicy
from fedfleet.server.run.watch import RunWatch
from fedfleet.shared.runrecord import CentralScores

Evaluate = Callable[[ArrayRecord], CentralScores | None]
RoundEnd = Callable[[int, ArrayRecord], MetricRecord | None]


class FedfleetStrategy(Strategy):
    """Wraps ``inner`` with fedfleet's intake, record, checkpoints and round policy."""

    def __init__(self, inner: Strategy, *, intake: Intake, codec: WeightCodec,
                 recorder: RunRecorder, policy: RoundPolicy, model: Any,
                 progress: ProgressFile | None = None, watch: RunWatch | None = None
                 ) -> None:
        """Wrap ``inner``; ``model`` (Keras) is used to write checkpoints.

        ``progress`` (shared with the grid) learns which replies the intake refused;
        ``watch`` keeps plots, registry and TensorBoard current after every round.
        """
        self.inner = inner
        self.watch = watch or RunWatch(None)
        self.progress = progress or ProgressFile(None, policy.num_rounds)
        self.intake = intake
        self.codec = codec
        self.recorder = recorder
        self.policy = policy
        self.model = model
        self.offset = 0
        """Rounds done before this process started (a continuation)."""
        self._base: list[Any] = []

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord,
                        config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Start the round once enough clients are connected."""
        run_round = self.offset + server_round
        self.recorder.begin_round(run_round)
        self.progress.round(run_round)
        started = getattr(grid, "round_started", None)  # PromptGrid: the simulation's
        if callable(started):                           # availability hears the round
            started(run_round)
        self._base = list(arrays.to_numpy_ndarrays())
        self.policy.wait_for_clients(grid)
        return self._outgoing(self.inner.configure_train(run_round, arrays, config, grid),
                              arrays)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the messages the intake rebuilt from the train replies."""
        result = self.intake.train(replies, self._base)
        self.recorder.train_replies(result)
        self.progress.rejected(r.node_id for r in result.rejected if r.kind == "rejected")
        if not self.policy.can_aggregate(len(result.accepted)):
            return None, None  # the round ends the run with its reasons (round_end)
        arrays, _ = self.inner.aggregate_train(self.offset + server_round,
                                               result.accepted)
        self.recorder.aggregated(result.metrics)
        return self.codec.conform(arrays), _metric_record(result.metrics)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Ask clients to evaluate only when the round policy wants it."""
        run_round = self.offset + server_round
        if not self.policy.evaluate_on_clients(
                run_round, self.recorder.row.get("train_replies", 0)):
            return []
        return self._outgoing(self.inner.configure_evaluate(run_round, arrays, config,
                                                            grid), arrays)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Aggregate the evaluation replies the intake accepted."""
        result = self.intake.evaluate(replies)
        self.recorder.evaluate_replies(result)
        self.progress.rejected(r.node_id for r in result.rejected if r.kind == "rejected")
        if not result.accepted:
            return None
        self.inner.aggregate_evaluate(self.offset + server_round, result.accepted)
        self.recorder.aggregated(result.metrics)
        return _metric_record(result.metrics)

    def round_end(self, evaluate: Evaluate) -> RoundEnd:
        """Return Flower's ``evaluate_fn``: test-set scores, then the round's end."""

        def after(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            central = evaluate(arrays)
            if server_round == 0:
                if not self.offset:  # a continuation keeps the first run's scores
                    self.recorder.initial(central)
                    self.watch.initial(self.recorder.record)
            else:
                self._end_round(self.offset + server_round, arrays, central)
            if central is None:
                return None
            return _metric_record({"loss": central["loss"], "accuracy": central["accuracy"]})

        return after

    def _end_round(self, run_round: int, arrays: ArrayRecord,
                   central: CentralScores | None) -> None:
        """Checkpoint, strategy state and the round's row; then the policy's check."""
        checkpoint: Path | None = None
        files = self.recorder.files
        if files is not None:
            self.model.set_weights(arrays.to_numpy_ndarrays())
            checkpoint = files.checkpoint(run_round)
            files.save_model(self.model, checkpoint)
            save_strategy_state(self.inner, files.state(run_round))
        row = self.recorder.end_round(central, checkpoint)
        self.watch.round_done(self.recorder.record, checkpoint)
        self.policy.check(row)

    def _outgoing(self, messages: Iterable[Message], arrays: ArrayRecord
                  ) -> list[Message]:
        encoded, size = self.codec.outgoing(messages, arrays)
        self.recorder.sent(size)
        return encoded


def _metric_record(values: Mapping[str, float]) -> MetricRecord:
    metrics: dict[str, MetricRecordValues] = dict(values)
    return MetricRecord(metrics)
