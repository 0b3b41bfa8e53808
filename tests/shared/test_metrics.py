"""The metric catalog: its entries are consistent, and hostile values never pass."""

from __future__ import annotations

import math

import pytest

from fedfleet.shared.metrics import CATALOG, MAX_NAME_CHARS, Catalog, Metric

HOSTILE: dict[object, object] = {
    "train_loss": float("nan"),
    "train_accuracy": float("inf"),
    "train_time_s": -float("inf"),
    "client_time_s": 1e308 * 10,  # overflows to inf
    "sgd_momentum": 2**80,
    "warm": 0.5,
    "queue_s": -0.65,
    "startup_s": "fast",
    "handler_s": [1.0, 2.0],
    "clientapp_peak_rss_mb": None,
    "trainer_peak_rss_mb": True,
    "global_eval_examples": 2.5,
    "num-examples": {"a": 1},
    "bogus": 1.0,
    "x" * 10_000: 1.0,
    7: 1.0,
    ("a", "b"): 1.0,
    "e\x00vil\n": 1.0,
}


def test_entries_are_consistent() -> None:
    """Names are short and unique; times state a clock; device metrics a reply."""
    # Prepare
    names = [m.name for m in CATALOG]
    # Assert
    assert len(names) == len(set(names))
    for metric in CATALOG:
        assert len(metric.name) <= MAX_NAME_CHARS and metric.doc
        assert metric.low <= metric.high and not math.isnan(metric.low)
        if metric.unit == "s":
            assert metric.clock, f"{metric.name} is a time without a clock"
            assert metric.low >= 0, f"{metric.name} may be negative"
        if metric.sender == "device":
            assert metric.phases, f"{metric.name} comes in no reply"
        else:
            assert not metric.phases and metric.aggregate == "none"
        if metric.aggregate != "none" or metric.line or metric.round_tag:
            assert metric.round_key, f"{metric.name} is shown but has no round field"


def test_a_catalog_refuses_a_name_twice() -> None:
    """Adding is explicit: a duplicate entry is an error, ``with_metric`` replaces."""
    # Prepare
    entry = Metric("train_loss", "again")
    # Execute / Assert
    with pytest.raises(ValueError, match="twice"):
        Catalog([*CATALOG, entry])
    assert CATALOG.with_metric(entry)["train_loss"].doc == "again"
    assert CATALOG["train_loss"].doc != "again"


def test_every_hostile_value_is_refused_with_its_reason() -> None:
    """Wrong types, NaN, inf, huge, negative, fractions of flags, unknown and long names."""
    # Execute
    checked = CATALOG.check(HOSTILE, "train")
    notes = "\n".join(checked.dropped)
    # Assert
    assert checked.kept == {}
    for key in ("train_loss", "train_accuracy", "train_time_s", "client_time_s",
                "startup_s", "handler_s", "clientapp_peak_rss_mb", "trainer_peak_rss_mb",
                "num-examples"):
        assert any(n.startswith(f"dropped {key}: ") and n.endswith("is not a finite number")
                   for n in checked.dropped), key
    assert "dropped sgd_momentum: 1.20893e+24 is outside [0, 1]" in notes
    assert "dropped warm: 0.5 is not a whole number" in notes
    assert "dropped queue_s: -0.65 is outside [0, 604800]" in notes
    assert "dropped global_eval_examples: 2.5 is not a whole number" in notes
    assert "dropped 5 unknown metric keys ('bogus', 'xxxx" in notes
    assert all(len(note) < 200 and note.isprintable() for note in checked.dropped)


def test_valid_values_are_kept_and_phases_are_kept_apart() -> None:
    """In-range values pass; an evaluate metric in a train reply is unknown there."""
    # Execute
    train = CATALOG.check({"train_loss": 0.3, "warm": 1, "queue_s": 0.0,
                           "eval_loss": 0.2}, "train")
    evaluate = CATALOG.check({"eval_loss": 0.2, "eval_accuracy": 1}, "evaluate")
    # Assert
    assert train.kept == {"train_loss": 0.3, "warm": 1.0, "queue_s": 0.0}
    assert train.dropped == ["dropped 1 unknown metric key ('eval_loss')"]
    assert evaluate.kept == {"eval_loss": 0.2, "eval_accuracy": 1.0} and not evaluate.dropped


def test_skipped_names_are_neither_kept_nor_noted() -> None:
    """The intake checks num-examples and global_eval_* itself."""
    checked = CATALOG.check({"num-examples": -3, "train_loss": 1.0}, "train",
                            skip=("num-examples",))
    assert checked.kept == {"train_loss": 1.0} and checked.dropped == []


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("value", [10**5000, [0.5] * 750_000, _NoRepr(), "x\x00" * 10_000],
                         ids=["huge-int", "long-list", "no-repr", "long-text"])
def test_a_refusal_never_raises_and_stays_short(value: object) -> None:
    """A value that is huge, unprintable or whose repr fails is refused in one short note."""
    # Execute
    checked = CATALOG.check({"train_loss": value}, "train")
    # Assert
    assert checked.kept == {}
    (note,) = checked.dropped
    assert note.startswith("dropped train_loss: ") and note.endswith("is not a finite number")
    assert len(note) < 100 and note.isprintable()
