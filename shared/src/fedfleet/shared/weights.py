"""Checks that a list of weight arrays fits a model, key by key, shape and dtype."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedfleet.shared.errors import ModelMismatchError

WeightSpec = tuple[tuple[int, ...], str]
"""Shape and dtype name of one weight tensor."""


def specs_of(arrays: Sequence[np.ndarray]) -> list[WeightSpec]:
    """Return the (shape, dtype) of every array, in order."""
    return [(tuple(int(d) for d in a.shape), np.dtype(a.dtype).name) for a in arrays]


def check_weights(
    expected: Sequence[WeightSpec], arrays: Sequence[np.ndarray], origin: str
) -> None:
    """Raise if ``arrays`` do not match ``expected`` one for one.

    Parameters
    ----------
    expected
        The (shape, dtype) list of the model the weights are meant for.
    arrays
        The weights that arrived.
    origin
        Who sent them, for the error message (e.g. ``"the server"``).

    Raises
    ------
    ModelMismatchError
        On a different number of tensors, or any shape or dtype that differs.
    """
    got = specs_of(arrays)
    if len(got) != len(expected):
        raise ModelMismatchError(
            f"weights from {origin} have {len(got)} tensors, the model has "
            f"{len(expected)}: server and client build different models "
            "(check the 'model', 'input-shape' and 'num-classes' run settings)"
        )
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            raise ModelMismatchError(
                f"weight tensor {index} from {origin} is {have[0]} {have[1]}, the model "
                f"expects {want[0]} {want[1]}"
            )
