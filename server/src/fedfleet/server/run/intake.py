"""Reply intake: every device reply rebuilt into exactly what fedfleet expects.

A device is never trusted. Before Flower's aggregation sees anything, each train or
evaluate reply is taken apart and rebuilt by :class:`Intake`; the strategy only ever
receives messages built here. What one reply may carry:

- **Train**: one ArrayRecord under ``arrays`` whose tensors match the model (for
  ``--compression float16`` the packed header of exactly this model and a bounded
  payload; for ``int8`` one int8 tensor and one positive scale per weight), and one
  MetricRecord under ``metrics`` with ``num-examples``. **Evaluate**: one MetricRecord
  with ``num-examples``, ``eval_loss`` and ``eval_accuracy``.
- Arrays are checked before they are deserialized or inflated, against the layout of
  :mod:`fedfleet.shared.compression` (:func:`~fedfleet.server.run.validation.check_arrays`);
  the decoded weights must be finite.
- Metrics: only what the metric catalog (:mod:`fedfleet.shared.metrics`) allows in
  that reply, each a finite number of its kind within its bounds; the rest is dropped
  and reported ("dropped 4998 unknown metric keys"). The three ``global_eval_*`` scores
  are kept only as a complete, valid set. Other records in the reply are dropped too.
- **A device's weight in the average is bounded.** ``num-examples`` must be a whole
  number in 1..``--max-examples`` (else the reply is rejected), and it counts at most
  ``--max-examples-ratio`` (k, default 3) times the round's lower-median claim: with
  honest devices in the majority the median is an honest count, so one device claiming
  a huge dataset weighs at most k honest devices' worth (with 3 devices, 60% instead of
  ~100%). The same cap applies to the evaluation sample counts.
- An update whose norm is over ``--max-update-norm-ratio`` x the round's median is
  rejected (needs 3+ replies).

Any exception while one reply is decoded or checked rejects that reply only, with its
reason. A device's own error text (Flower's error replies carry its exception) is
stripped of control characters and cut to ``max_error_chars``. Everything the intake
learned goes back in an :class:`IntakeResult` for the run record; device metrics are
reported in their own namespace, so no device can write a server field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message

from fedfleet.server.run.validation import (
    check_arrays,
    check_values,
    clean_text,
    describe_error,
    names,
    norm_outliers,
    update_norm,
)
from fedfleet.shared.compression import decode_update
from fedfleet.shared.constants import ARRAYS_KEY, METRICS_KEY, NUM_EXAMPLES_KEY
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.metrics import CATALOG, GLOBAL_EVAL, Catalog, Phase, finite, show
from fedfleet.shared.runrecord import ErrorKind
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import WeightSpec, check_weights

__all__ = ["DEADLINE_CODE", "DEADLINE_REASON", "AGGREGATED_EVALUATE", "AGGREGATED_TRAIN",
           "EvalScore", "Intake", "IntakeLimits", "IntakeResult", "Rejection",
           "ReplyReport", "cap_weights", "clean_text", "describe_error", "lower_median"]

DEADLINE_CODE = 9001
"""Error code of the reply :class:`fedfleet.server.run.grid.PromptGrid` makes for a device
that did not answer before the round closed."""
DEADLINE_REASON = "no reply by the deadline"

AGGREGATED_TRAIN = CATALOG.averaged("train")
AGGREGATED_EVALUATE = CATALOG.averaged("evaluate")
"""The round's metrics (the catalog's ``weighted_mean`` ones): each averaged over the
accepted replies that have it, weighted by their (capped) ``num-examples``. The
rebuilt messages carry only ``num-examples``, so one reply without a metric never
takes it away from the others."""


@dataclass(frozen=True)
class IntakeLimits:
    """Per-reply bounds (the run settings of the same names; defaults: RunSettings')."""

    max_examples: int = RunSettings.max_examples
    max_examples_ratio: float = RunSettings.max_examples_ratio
    max_update_norm_ratio: float = RunSettings.max_update_norm_ratio
    max_error_chars: int = 300

    @classmethod
    def from_settings(cls, settings: RunSettings) -> IntakeLimits:
        """Return the bounds of a run."""
        return cls(settings.max_examples, settings.max_examples_ratio,
                   settings.max_update_norm_ratio)


@dataclass(frozen=True)
class Rejection:
    """A reply left out, and why. ``kind``: error (the device's), rejected, deadline."""

    node_id: str
    kind: ErrorKind
    reason: str

    @property
    def text(self) -> str:
        """Return the reason as recorded (``rejected: ...`` for the intake's own)."""
        return f"rejected: {self.reason}" if self.kind == "rejected" else self.reason


@dataclass(frozen=True)
class EvalScore:
    """A device's score of the global model it received (``global_eval_*``)."""

    loss: float
    accuracy: float
    examples: float


@dataclass
class ReplyReport:
    """What an accepted reply told the server, for the run record."""

    node_id: str
    metrics: dict[str, float]
    """The device's metrics that passed, under the names it sent."""
    dropped: list[str] = field(default_factory=list)
    weight: float | None = None
    """The ``num-examples`` counted in the average (after the cap)."""
    update_norm: float | None = None
    eval_score: EvalScore | None = None


@dataclass
class IntakeResult:
    """One round's replies, sorted: messages to aggregate, rejections, reports."""

    accepted: list[Message] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    reports: list[ReplyReport] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    """The round's averaged metrics (see :data:`AGGREGATED_TRAIN`)."""
    payload_bytes: int = 0


class Reject(Exception):
    """Raised inside the intake: this reply is left out for the reason given."""


def lower_median(values: Sequence[float]) -> float:
    """Return the lower median: the middle value, or the lower of the middle two."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def cap_weights(claims: Mapping[str, float], ratio: float) -> dict[str, float]:
    """Cap each claim at ``ratio`` x the lower median of all claims (``ratio`` 0: off)."""
    if ratio <= 0 or not claims:
        return dict(claims)
    cap = ratio * lower_median(list(claims.values()))
    return {key: min(value, cap) for key, value in claims.items()}


@dataclass
class _Decoded:
    """One reply that passed the per-reply checks, before the round-wide ones."""

    msg: Message
    node: str
    metrics: dict[str, float]
    dropped: list[str]
    claim: float
    weights: list[np.ndarray] = field(default_factory=list)
    norm: float = 0.0
    eval_score: EvalScore | None = None


_Decoder = Callable[[Message, str], _Decoded]


class Intake:
    """Checks and rebuilds replies against one model (see the module docstring)."""

    def __init__(self, specs: Sequence[WeightSpec], compression: str = "none",
                 limits: IntakeLimits | None = None, catalog: Catalog = CATALOG) -> None:
        """Expect weights of ``specs`` sent with ``compression``, metrics of ``catalog``."""
        self.specs = [(tuple(shape), dtype) for shape, dtype in specs]
        self.compression = compression
        self.limits = limits or IntakeLimits()
        self.catalog = catalog

    # -- public API ---------------------------------------------------------------
    def train(self, replies: Iterable[Message], base: Sequence[np.ndarray]
              ) -> IntakeResult:
        """Sort train replies to the global weights ``base`` (as sent, uncompressed)."""
        result = IntakeResult()
        decoded = self._each(replies, result, lambda m, n: self._train_reply(m, n, base))
        norms = {d.node: d.norm for d in decoded}
        outliers = norm_outliers(norms, self.limits.max_update_norm_ratio)
        kept = [d for d in decoded if d.node not in outliers]
        result.rejected += [Rejection(node, "rejected", reason)
                            for node, reason in outliers.items()]
        weights = cap_weights({d.node: d.claim for d in kept},
                              self.limits.max_examples_ratio)
        scores = cap_weights({d.node: d.eval_score.examples for d in kept
                              if d.eval_score is not None}, self.limits.max_examples_ratio)
        result.metrics = _means(kept, weights, self.catalog.averaged("train"))
        for item in kept:
            if item.eval_score is not None and scores[item.node] < item.eval_score.examples:
                item.eval_score = EvalScore(item.eval_score.loss, item.eval_score.accuracy,
                                            scores[item.node])
                item.dropped.append(f"global_eval_examples counted as {scores[item.node]:g} "
                                    f"(--max-examples-ratio)")
            if weights[item.node] < item.claim:
                item.dropped.append(f"num-examples {item.claim:g} counted as "
                                    f"{weights[item.node]:g} (--max-examples-ratio)")
            content = RecordDict({
                ARRAYS_KEY: ArrayRecord(item.weights),
                METRICS_KEY: MetricRecord({NUM_EXAMPLES_KEY: weights[item.node]})})
            result.accepted.append(_rebuilt(item.msg, content))
            result.reports.append(ReplyReport(item.node, item.metrics, item.dropped,
                                              weights[item.node], norms[item.node],
                                              item.eval_score))
        return result

    def evaluate(self, replies: Iterable[Message]) -> IntakeResult:
        """Sort evaluate replies."""
        result = IntakeResult()
        decoded = self._each(replies, result, self._evaluate_reply)
        weights = cap_weights({d.node: d.claim for d in decoded},
                              self.limits.max_examples_ratio)
        result.metrics = _means(decoded, weights, self.catalog.averaged("evaluate"))
        for item in decoded:
            if weights[item.node] < item.claim:
                item.dropped.append(f"num-examples {item.claim:g} counted as "
                                    f"{weights[item.node]:g} (--max-examples-ratio)")
            content = RecordDict({METRICS_KEY: MetricRecord(
                {NUM_EXAMPLES_KEY: weights[item.node]})})
            result.accepted.append(_rebuilt(item.msg, content))
            result.reports.append(ReplyReport(item.node, item.metrics, item.dropped,
                                              weights[item.node]))
        return result

    # -- one reply ----------------------------------------------------------------
    def _each(self, replies: Iterable[Message], result: IntakeResult, decode: _Decoder
              ) -> list[_Decoded]:
        """Decode every reply; a node's second reply in one round is refused."""
        decoded: dict[str, _Decoded] = {}
        for msg in replies:
            item = self._one(msg, result, decode)
            if item is None:
                continue
            if item.node in decoded:
                result.rejected.append(Rejection(item.node, "rejected", "a second reply "
                                                 "from the same node in one round"))
                continue
            decoded[item.node] = item
        return list(decoded.values())

    def _one(self, msg: Message, result: IntakeResult, decode: _Decoder
             ) -> _Decoded | None:
        """Decode one reply; any failure becomes that reply's rejection, never more."""
        node = "unknown"
        try:
            node = str(int(msg.metadata.src_node_id))
            if msg.has_error():
                code = msg.error.code
                if code == DEADLINE_CODE:
                    result.rejected.append(Rejection(node, "deadline", clean_text(
                        msg.error.reason or DEADLINE_REASON, self.limits.max_error_chars)))
                else:
                    result.rejected.append(Rejection(node, "error", clean_text(
                        describe_error(msg.error.reason), self.limits.max_error_chars)))
                return None
            result.payload_bytes += _payload_bytes(msg)
            return decode(msg, node)
        except (Reject, FedfleetError) as err:  # messages written for people
            reason = str(err)
        except Exception as err:  # one reply must never end the round
            reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        result.rejected.append(Rejection(node, "rejected",
                                         clean_text(reason, self.limits.max_error_chars)))
        return None

    def _train_reply(self, msg: Message, node: str, base: Sequence[np.ndarray]
                     ) -> _Decoded:
        origin = f"node {node}"
        dropped: list[str] = []
        content = msg.content
        arrays = _single(content.array_records, ARRAYS_KEY, "ArrayRecord", dropped)
        record = _single(content.metric_records, METRICS_KEY, "MetricRecord", dropped)
        if len(content.config_records):
            dropped.append(f"dropped {len(content.config_records)} config record(s)")
        if arrays is None:
            raise Reject("the reply carries no weights (no ArrayRecord 'arrays')")
        if record is None:
            raise Reject("the reply carries no metrics (no MetricRecord 'metrics')")
        claim = self._claim(record)
        received = check_arrays(arrays, self.specs, self.compression, origin)
        weights = decode_update(received, base, self.compression, origin)
        check_weights(self.specs, weights, origin)
        check_values(weights, claim, self.limits.max_examples)
        metrics = self._metrics(record, "train", claim, dropped)
        score = self._global_eval(record, dropped)
        return _Decoded(msg, node, metrics, dropped, claim, weights,
                        update_norm(weights, base), score)

    def _evaluate_reply(self, msg: Message, node: str) -> _Decoded:
        dropped: list[str] = []
        content = msg.content
        record = _single(content.metric_records, METRICS_KEY, "MetricRecord", dropped)
        if len(content.array_records):
            dropped.append(f"dropped {len(content.array_records)} ArrayRecord(s): an "
                           "evaluate reply carries none")
        if len(content.config_records):
            dropped.append(f"dropped {len(content.config_records)} config record(s)")
        if record is None:
            raise Reject("the reply carries no metrics (no MetricRecord 'metrics')")
        claim = self._claim(record)
        metrics = self._metrics(record, "evaluate", claim, dropped)
        for key in ("eval_loss", "eval_accuracy"):
            if key not in metrics:
                raise Reject(f"the reply has no valid {key}")
        return _Decoded(msg, node, metrics, dropped, claim)

    def _claim(self, record: MetricRecord) -> float:
        """Return ``num-examples`` if it is a whole number in 1..max-examples."""
        value = record.get(NUM_EXAMPLES_KEY)
        check_values([], value, self.limits.max_examples)
        number = finite(value)
        if number is None:  # check_values refused it already; for the type checker
            raise Reject(f"num-examples {show(value)} is not a number")
        return number

    def _metrics(self, record: MetricRecord, phase: Phase, claim: float,
                 dropped: list[str]) -> dict[str, float]:
        """Return the metrics the catalog allows (``num-examples``: the claim)."""
        skip = (NUM_EXAMPLES_KEY, *GLOBAL_EVAL) if phase == "train" else (NUM_EXAMPLES_KEY,)
        checked = self.catalog.check(record, phase, skip=skip)
        dropped += checked.dropped
        return {NUM_EXAMPLES_KEY: claim, **checked.kept}

    def _global_eval(self, record: MetricRecord, dropped: list[str]) -> EvalScore | None:
        """Return the ``global_eval_*`` scores if all three are there and valid."""
        present = [k for k in GLOBAL_EVAL if k in record]
        if not present:
            return None
        loss, acc, examples = (finite(record.get(k)) for k in GLOBAL_EVAL)
        loss_m, acc_m = self.catalog["global_eval_loss"], self.catalog["global_eval_accuracy"]
        problem = None
        if len(present) != len(GLOBAL_EVAL):
            problem = (f"incomplete (has {', '.join(present)}; lacks "
                       f"{', '.join(k for k in GLOBAL_EVAL if k not in record)})")
        elif loss is None or loss_m.refusal(loss) is not None:
            problem = (f"global_eval_loss {show(record['global_eval_loss'])} is not in "
                       f"[{loss_m.low:g}, {loss_m.high:g}]")
        elif acc is None or acc_m.refusal(acc) is not None:
            problem = (f"global_eval_accuracy {show(record['global_eval_accuracy'])} is "
                       f"not in [{acc_m.low:g}, {acc_m.high:g}]")
        elif examples is None or examples != int(examples) or \
                not 1 <= examples <= self.limits.max_examples:
            problem = (f"global_eval_examples {show(record['global_eval_examples'])} is "
                       f"not a whole number in 1..{self.limits.max_examples}")
        if problem is not None or loss is None or acc is None or examples is None:
            dropped.append(f"dropped global_eval_*: {problem}")
            return None
        return EvalScore(loss, acc, examples)


def _payload_bytes(msg: Message) -> int:
    return sum(len(a.data) for r in msg.content.array_records.values() for a in r.values())


_R = TypeVar("_R")


def _single(records: Mapping[str, _R], key: str, kind: str, dropped: list[str]
            ) -> _R | None:
    """Return ``records[key]``; note any other record of that kind as dropped."""
    others = [name for name in records if name != key]
    if others:
        dropped.append(f"dropped {len(others)} extra {kind}(s) ({names(others)})")
    return records.get(key)


def _means(items: Sequence[_Decoded], weights: Mapping[str, float],
           keys: Sequence[str]) -> dict[str, float]:
    """Return each metric's mean over the items that have it, weighted by ``weights``."""
    means = {}
    for name in keys:
        having = [(d.metrics[name], weights[d.node]) for d in items if name in d.metrics]
        total = sum(w for _, w in having)
        if having and total > 0:
            means[name] = sum(v * w for v, w in having) / total
    return means


def _rebuilt(original: Message, content: RecordDict) -> Message:
    """Return a new message with ``content`` and a copy of ``original``'s metadata."""
    return make_message(copy(original.metadata), content)
