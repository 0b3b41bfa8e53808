"""The metric catalog: every number a device reports or a round records, and its rules.

One :class:`Metric` per name says what the value is (type, bounds, unit, the clock a
time is read on), who sends it (a device in its train or evaluate reply, or the
server), how a round combines the devices' values, and where it is shown (the round
line, the plots, TensorBoard, the HTML report). The client's replies carry these
names (a test holds every name it sends to the catalog, and the ClientApp reads the
bounds of its cross-clock timings here), the server's reply intake refuses whatever
the catalog does not allow (:meth:`Catalog.check`), and the recorder, run record,
plots, TensorBoard and report read the catalog instead of lists of their own. Adding a
metric is one entry here plus its producer.

Clocks: ``device monotonic`` times are differences of ``time.perf_counter()`` on the
device; ``device wall`` times are differences of two readings of the device's wall
clock; ``server monotonic`` times are the ServerApp's own. ``queue_s`` is the one
reading that spans two clocks (see its entry): it includes the offset between the
SuperLink's clock and the device's, so the device leaves it out when it reads below 0
(that reading is only clock offset) and the intake refuses one below 0. Every bound
is one an honest device cannot leave (times under a week, memory under 16 TiB,
losses under float32's largest value).

This module imports neither Flower nor Keras.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fedfleet.shared.constants import NUM_EXAMPLES_KEY

Sender = Literal["device", "server"]
Kind = Literal["float", "count", "flag"]
"""``float``: any finite number; ``count``: a whole number; ``flag``: 0 or 1."""
Phase = Literal["train", "evaluate"]
Aggregate = Literal["none", "weighted_mean", "max"]
"""How a round combines the devices' values: the mean weighted by each reply's
(capped) ``num-examples``, the largest value, or not at all."""

MAX_NAME_CHARS = 64
"""A metric name longer than this is refused before it is looked up or recorded."""
MAX_SECONDS = 7 * 86_400.0
"""Longest time a device may report: a week, longer than any round may stay open."""
MAX_MB = 2.0**24
"""Most memory a device may report: 16 TiB in MB."""
FLOAT32_MAX = 3.4028234663852886e38
"""Largest loss: Keras computes losses in float32, so anything above is inf."""


@dataclass(frozen=True)
class Metric:
    """One metric: what it holds, who sends it, how rounds combine and show it."""

    name: str
    doc: str
    sender: Sender = "device"
    kind: Kind = "float"
    low: float = 0.0
    high: float = math.inf
    unit: str = ""
    """``s``, ``MB``, ``examples`` or empty (a ratio or a score)."""
    clock: str | None = None
    """For times: the clock both readings come from (see the module docstring)."""
    phases: tuple[Phase, ...] = ()
    """The device replies it may come in (none for the server's metrics)."""
    aggregate: Aggregate = "none"
    round_key: str | None = None
    """The round row's field that holds the round's value (the aggregate, or the
    server's own value)."""
    line: str | None = None
    """Its label in the one-line round summary (the round's value)."""
    line_format: str = ".4f"
    report: str | None = None
    """Its column header in the HTML report's round table."""
    plot: str | None = None
    """The plot drawing the round's value (``accuracy``, ``loss``, or a new name)."""
    plot_label: str = ""
    plot_dashed: bool = False
    device_plot: str | None = None
    """The plot drawing one line per device (the first metric of a plot that has data
    is drawn)."""
    device_plot_title: str = ""
    """``{devices}`` in it becomes ``, N devices`` (with more than one)."""
    device_plot_rank: int = 0
    """Of a device plot's metrics, the lowest rank that has data is drawn."""
    initial: str | None = None
    """The record's ``initial`` field holding the initial model's value (round 0)."""
    round_tag: str | None = None
    """TensorBoard tag of the round's value."""
    device_tag: str | None = None
    """TensorBoard tag prefix of each device's value: ``<prefix>/<node id>``."""

    @property
    def axis(self) -> str:
        """Return the label of a plot axis of this metric (its unit, or what it is)."""
        return {"s": "seconds"}.get(self.unit, self.unit) or self.name.rsplit("_", 1)[-1]

    @property
    def is_fraction(self) -> bool:
        """Return whether the metric lies in [0, 1] (an accuracy, a ratio)."""
        return self.low == 0 and self.high == 1

    def refusal(self, value: object) -> str | None:
        """Return why ``value`` is not a valid value of this metric, or None."""
        number = finite(value)
        if number is None:
            return f"{show(value)} is not a finite number"
        if self.kind in ("count", "flag") and number != int(number):
            return f"{number:g} is not a whole number"
        if self.kind == "flag" and number not in (0.0, 1.0):
            return f"{number:g} is not 0 or 1"
        if not self.low <= number <= self.high:
            return f"{number:g} is outside [{self.low:g}, {self.high:g}]"
        return None


def finite(value: object) -> float | None:
    """Return ``value`` as a finite float, or None (booleans and text are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 60


def show(value: object, limit: int = 40) -> str:
    """Return ``repr(value)`` on one line, printable only, cut to ``limit`` characters.

    Never raises, and costs little whatever a device sent: the text is made by a
    bounded ``reprlib`` (a few items of a list, a few digits of a huge number).
    """
    try:
        raw = _SHORT.repr(value)
    except Exception:  # a value whose repr fails still gets a name
        raw = f"<{type(value).__name__}>"
    text = "".join(ch if ch.isprintable() else " " for ch in raw[:limit])
    return text if len(raw) <= limit else f"{text}..."


@dataclass
class Checked:
    """A device's metrics after :meth:`Catalog.check`: kept values and refusal notes."""

    kept: dict[str, float]
    dropped: list[str]


class Catalog:
    """An ordered set of :class:`Metric` entries, looked up by name."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        """Index ``metrics``; a name given twice is an error."""
        self._by_name: dict[str, Metric] = {}
        for metric in metrics:
            if metric.name in self._by_name:
                raise ValueError(f"metric {metric.name!r} is in the catalog twice")
            self._by_name[metric.name] = metric

    def __iter__(self) -> Iterator[Metric]:
        """Iterate the entries in catalog order."""
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        """Return whether ``name`` is a metric of the catalog."""
        return isinstance(name, str) and name in self._by_name

    def __getitem__(self, name: str) -> Metric:
        """Return the entry of ``name``."""
        return self._by_name[name]

    def with_metric(self, metric: Metric) -> Catalog:
        """Return a copy of this catalog with ``metric`` added (or replaced)."""
        entries = {**self._by_name, metric.name: metric}
        return Catalog(entries.values())

    def sent_in(self, phase: Phase) -> dict[str, Metric]:
        """Return the metrics a device may send in a ``phase`` reply, by name."""
        return {m.name: m for m in self if m.sender == "device" and phase in m.phases}

    def averaged(self, phase: Phase) -> tuple[str, ...]:
        """Return the device metrics of ``phase`` a round averages (the intake does)."""
        return tuple(n for n, m in self.sent_in(phase).items()
                     if m.aggregate == "weighted_mean")

    def plots(self) -> dict[str, list[Metric]]:
        """Return each round plot's metrics: the server's, then solid, then dashed lines."""
        out: dict[str, list[Metric]] = {}
        for metric in self:
            if metric.plot and metric.round_key:
                out.setdefault(metric.plot, []).append(metric)
        return {name: sorted(group, key=lambda m: (m.sender == "device", m.plot_dashed))
                for name, group in out.items()}

    def device_plots(self) -> dict[str, list[Metric]]:
        """Return each per-device plot's metrics, lowest ``device_plot_rank`` first."""
        out: dict[str, list[Metric]] = {}
        for metric in self:
            if metric.device_plot:
                out.setdefault(metric.device_plot, []).append(metric)
        return {name: sorted(group, key=lambda m: m.device_plot_rank)
                for name, group in out.items()}

    def check(self, values: Mapping[Any, object], phase: Phase,
              skip: Iterable[str] = ()) -> Checked:
        """Keep the values of ``values`` that the catalog allows in a ``phase`` reply.

        Every other entry is refused with a note: a key that is not text or is longer
        than :data:`MAX_NAME_CHARS`, an unknown name, or a value that is not a finite
        number of the metric's kind within its bounds. Names in ``skip`` are neither
        kept nor noted (the caller checks them itself). Never raises.
        """
        allowed = self.sent_in(phase)
        kept: dict[str, float] = {}
        dropped: list[str] = []
        unknown: list[str] = []
        skipped = set(skip)
        for key, value in values.items():
            if not isinstance(key, str) or len(key) > MAX_NAME_CHARS:
                unknown.append(show(key))
                continue
            if key in skipped:
                continue
            metric = allowed.get(key)
            if metric is None:
                unknown.append(show(key))
                continue
            problem = metric.refusal(value)
            number = finite(value)
            if problem is None and number is not None:
                kept[key] = number
            else:
                dropped.append(f"dropped {key}: {problem}")
        if unknown:
            more = ", ..." if len(unknown) > 3 else ""
            dropped.append(f"dropped {len(unknown)} unknown metric key"
                           f"{'s' if len(unknown) > 1 else ''} "
                           f"({', '.join(unknown[:3])}{more})")
        return Checked(kept, dropped)


_TRAIN: tuple[Phase, ...] = ("train",)
_EVALUATE: tuple[Phase, ...] = ("evaluate",)
_BOTH: tuple[Phase, ...] = ("train", "evaluate")

CATALOG = Catalog([
    # -- what the device sends -------------------------------------------------------
    Metric(NUM_EXAMPLES_KEY, "examples the reply's training or evaluation used; the "
           "intake also bounds it by --max-examples and caps its weight", kind="count",
           low=1, unit="examples", phases=_BOTH),
    Metric("train_accuracy", "last local epoch's training accuracy", high=1,
           phases=_TRAIN, aggregate="weighted_mean", round_key="train_accuracy",
           report="train acc", plot="accuracy", plot_label="training (clients)",
           plot_dashed=True, device_plot="clients_accuracy",
           device_plot_title="Accuracy per device (each device's training{devices})",
           device_plot_rank=1,
           round_tag="accuracy/train"),
    Metric("train_loss", "last local epoch's training loss", high=FLOAT32_MAX,
           phases=_TRAIN, aggregate="weighted_mean", round_key="train_loss",
           line="train loss",
           report="train loss", plot="loss", plot_label="training (clients)",
           plot_dashed=True, round_tag="loss/train"),
    Metric("train_time_s", "local training (model.fit) only", unit="s", high=MAX_SECONDS,
           clock="device monotonic", phases=_TRAIN, aggregate="max",
           round_key="max_client_train_s", report="slowest train s",
           device_plot="clients_train_time",
           device_plot_title="Training time per device{devices}",
           round_tag="time/slowest_client_train_s", device_tag="device_train_time_s"),
    Metric("client_time_s", "the trainer's whole train call (data, model, fit)",
           unit="s", high=MAX_SECONDS, clock="device monotonic", phases=_TRAIN),
    Metric("sgd_momentum", "momentum of the SGD the device's model was compiled with "
           "(absent with Adam)", high=1, phases=_TRAIN),
    Metric("global_eval_loss", "the received global model's loss on the device's "
           "hold-out (--client-eval with-train; kept only with the other two)",
           high=FLOAT32_MAX, phases=_TRAIN),
    Metric("global_eval_accuracy", "the received global model's accuracy on the "
           "device's hold-out (as global_eval_loss)", high=1, phases=_TRAIN),
    Metric("global_eval_examples", "hold-out examples of global_eval_* (also bounded "
           "by --max-examples)", kind="count", low=1, unit="examples", phases=_TRAIN),
    Metric("eval_loss", "the received global model's loss on the device's hold-out",
           high=FLOAT32_MAX,
           phases=_EVALUATE, aggregate="weighted_mean", round_key="eval_loss",
           report="eval loss", plot="loss", plot_label="federated evaluation",
           round_tag="loss/federated_eval"),
    Metric("eval_accuracy", "the received global model's accuracy on the device's "
           "hold-out", high=1, phases=_EVALUATE, aggregate="weighted_mean",
           round_key="eval_accuracy", line="client acc", line_format=".2%",
           report="eval acc", plot="accuracy", plot_label="federated evaluation",
           device_plot="clients_accuracy",
           device_plot_title="Accuracy per device (global model on each device's "
                             "hold-out{devices})",
           round_tag="accuracy/federated_eval", device_tag="device_accuracy"),
    Metric("eval_time_s", "model.evaluate on the hold-out", unit="s", high=MAX_SECONDS,
           clock="device monotonic", phases=_EVALUATE),
    Metric("warm", "1 if the warm trainer did the work, 0 if the ClientApp process",
           kind="flag", high=1, phases=_BOTH, aggregate="weighted_mean",
           round_key="warm"),
    Metric("queue_s", "the message's creation on the SuperLink until the device's "
           "ClientApp process started (delivery polling and process launch)", unit="s",
           high=MAX_SECONDS,
           phases=_BOTH,
           clock="SuperLink wall (created_at) to device wall (process start, as for "
                 "startup_s): includes the offset between the two clocks; a reading "
                 "below 0 is only that offset: the device leaves it out and the intake "
                 "refuses it"),
    Metric("startup_s", "ClientApp process start until its handler ran (imports)",
           unit="s", high=MAX_SECONDS, phases=_BOTH,
           clock="device wall (the process start from /proc: boot time in whole "
                 "seconds plus clock ticks, up to 1 s early); a reading below 0 is that "
                 "error: the device leaves it out and the intake refuses it"),
    Metric("handler_s", "the ClientApp handler itself", unit="s", high=MAX_SECONDS,
           clock="device wall", phases=_BOTH),
    Metric("clientapp_peak_rss_mb", "the ClientApp process's peak resident memory",
           unit="MB", high=MAX_MB, phases=_BOTH),
    Metric("trainer_peak_rss_mb", "the warm trainer's peak resident memory (sent only "
           "when it did the work)", unit="MB", high=MAX_MB, phases=_BOTH),
    # -- what the server records -----------------------------------------------------
    Metric("central_loss", "the global model's loss on the server's test set",
           sender="server", round_key="central_loss", report="test loss", plot="loss",
           plot_label="central test set", initial="loss", round_tag="loss/central_test"),
    Metric("central_accuracy", "the global model's accuracy on the server's test set",
           sender="server", high=1, round_key="central_accuracy", line="test acc",
           line_format=".2%", report="test acc", plot="accuracy",
           plot_label="central test set", initial="accuracy",
           round_tag="accuracy/central_test"),
    Metric("train_replies", "train replies aggregated", sender="server", kind="count",
           round_key="train_replies", report="aggregated",
           round_tag="replies/aggregated"),
    Metric("wall_s", "the round from its start to its end", sender="server",
           unit="s", high=MAX_SECONDS, clock="server monotonic", round_key="wall_s",
           report="wall s", round_tag="time/round_s"),
])
"""fedfleet's metrics (see the module docstring)."""

GLOBAL_EVAL = ("global_eval_loss", "global_eval_accuracy", "global_eval_examples")
"""Kept only as a complete, valid set (the intake checks them together)."""
