"""Update checks: finite values, plausible example counts, norm outliers."""

from __future__ import annotations

import numpy as np
import pytest

from fedfleet.server.run.validation import (
    UpdateRejected,
    check_values,
    norm_outliers,
    update_norm,
)


def test_finite_weights_and_a_sane_count_pass() -> None:
    check_values([np.ones(3, np.float32)], 10, 100)


@pytest.mark.parametrize(("weights", "count", "reason"), [
    ([np.array([1.0, np.inf])], 10, "1 non-finite value(s) (NaN/inf) in weight 0"),
    ([np.ones(2)], 0, "num-examples 0 is outside 1..100"),
    ([np.ones(2)], 101, "num-examples 101 is outside 1..100"),
    ([np.ones(2)], 2.5, "num-examples 2.5 is not a whole number"),
    ([np.ones(2)], None, "num-examples None is not a whole number"),
    ([np.ones(2)], float("nan"), "is not a whole number"),
])
def test_bad_values_are_named(weights: list[np.ndarray], count: object,
                              reason: str) -> None:
    with pytest.raises(UpdateRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_values(weights, count, 100)


def test_update_norm_is_the_l2_distance() -> None:
    assert update_norm([np.array([3.0]), np.array([4.0])],
                       [np.zeros(1), np.zeros(1)]) == pytest.approx(5.0)


def test_only_the_outlier_is_flagged() -> None:
    norms = {"a": 1.0, "b": 1.2, "c": 0.9, "d": 50.0}
    assert list(norm_outliers(norms, 10)) == ["d"]
    assert norm_outliers(norms, 0) == {}
    assert norm_outliers({"a": 1.0, "b": 500.0}, 10) == {}  # two replies: undecidable


@pytest.mark.parametrize("value", [10**5000, [1] * 1_000_000, 1e300, "12", True],
                         ids=["huge-int", "long-list", "huge-float", "text", "bool"])
def test_a_hostile_example_count_is_refused_in_one_short_line(value: object) -> None:
    """num-examples that is huge, a list, text or a bool: refused, never a crash."""
    with pytest.raises(UpdateRejected) as err:
        check_values([np.ones(2)], value, 100)
    assert len(str(err.value)) < 120 and str(err.value).startswith("num-examples ")
