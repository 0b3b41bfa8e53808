"""Checks on a client's update before it may take part in aggregation.

The shape check (:func:`fedfleet.shared.weights.check_weights`) comes first; here:
all values finite, a plausible number of examples, and an update norm that is not an
outlier among the round's replies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedfleet.shared.errors import FedfleetError


class UpdateRejected(FedfleetError):
    """A reply's update is not fit to aggregate; the message says why."""


def check_values(weights: Sequence[np.ndarray], num_examples: object,
                 max_examples: int) -> None:
    """Reject non-finite weights and an implausible number of examples.

    Raises
    ------
    UpdateRejected
        Naming the first problem found.
    """
    for index, array in enumerate(weights):
        if not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise UpdateRejected(f"{bad} non-finite value(s) (NaN/inf) in weight {index}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, float)) or \
            not math.isfinite(num_examples) or num_examples != int(num_examples):
        raise UpdateRejected(f"num-examples {num_examples!r} is not a whole number")
    if not 0 < num_examples <= max_examples:
        raise UpdateRejected(f"num-examples {int(num_examples)} is outside 1..{max_examples} "
                             "(raise --max-examples if real)")


def update_norm(weights: Sequence[np.ndarray], base: Sequence[np.ndarray]) -> float:
    """Return the L2 norm of ``weights - base`` over all layers."""
    total = sum(float(np.sum(np.square(w.astype(np.float64) - b.astype(np.float64))))
                for w, b in zip(weights, base, strict=True))
    return math.sqrt(total)


def norm_outliers(norms: Mapping[str, float], ratio: float) -> dict[str, str]:
    """Return the replies whose update norm exceeds ``ratio`` x the round's median.

    Needs at least three replies (with two, neither can be told to be the odd one);
    ``ratio`` 0 turns the check off.
    """
    if ratio <= 0 or len(norms) < 3:
        return {}
    median = float(np.median(list(norms.values())))
    limit = ratio * max(median, 1e-12)
    return {key: f"update norm {norm:.3g} is over {ratio:g}x the round's median "
                 f"{median:.3g} (--max-update-norm-ratio)"
            for key, norm in norms.items() if norm > limit}
