"""Checks on a client's update before it may take part in aggregation.

The arrays as they arrive (:func:`check_arrays`: stype, dtype, shape and ``.npy``
bytes against the layout :func:`fedfleet.shared.compression.update_layout` gives,
before anything is deserialized), then the shape check
(:func:`fedfleet.shared.weights.check_weights`); here too: all values finite, a
plausible number of examples, and an update norm that is not an outlier among the
round's replies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from fedfleet.shared.compression import float16_header, update_layout
from fedfleet.shared.errors import FedfleetError, ModelMismatchError
from fedfleet.shared.metrics import finite, show
from fedfleet.shared.npy import read_npy
from fedfleet.shared.weights import WeightSpec

NUMPY_STYPE = "numpy.ndarray"


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
    count = finite(num_examples)
    if count is None or count != int(count):
        raise UpdateRejected(f"num-examples {show(num_examples)} is not a whole number")
    if not 0 < count <= max_examples:
        shown = f"{int(count)}" if abs(count) < 1e15 else f"{count:g}"
        raise UpdateRejected(f"num-examples {shown} is outside 1..{max_examples} "
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


def clean_text(text: object, limit: int = 300) -> str:
    """Return ``text`` on one line, printable characters only, cut to ``limit``.

    For what a device sent (error text, record names) before it is logged or recorded.
    """
    raw = str(text)
    head = "".join(ch if ch.isprintable() else " " for ch in raw[:limit])
    return head if len(raw) <= limit else f"{head}... ({len(raw) - limit} more characters)"


_REASON = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def describe_error(reason: str | None) -> str:
    """Turn Flower's ``<class 'pkg.Err'>:<'text'>`` into ``Err: text``."""
    match = _REASON.match(reason or "")
    return f"{match.group(1)}: {match.group(2)}" if match else (reason or "unknown error")


def names(keys: Iterable[str], limit: int = 3) -> str:
    """Return the first ``limit`` of ``keys``, cleaned and quoted, for a message."""
    return ", ".join(repr(clean_text(k, 40)) for k in list(keys)[:limit])


def check_arrays(record: ArrayRecord, specs: Sequence[WeightSpec], compression: str,
                 origin: str) -> list[np.ndarray]:
    """Deserialize the arrays of ``record`` after checking each against the layout.

    Raises
    ------
    ModelMismatchError
        If the arrays are not what ``compression`` sends for a model of ``specs``.
    """
    layout = update_layout(specs, compression)
    keys = list(record.keys())
    if len(keys) != len(layout):
        packing = "" if compression == "none" else f" ({compression})"
        raise ModelMismatchError(f"weights from {origin} have {len(keys)} tensors, "
                                 f"expected {len(layout)} for this model{packing}")
    if keys != [str(i) for i in range(len(layout))]:
        raise ModelMismatchError(f"weights from {origin} are keyed {names(keys)}..., "
                                 f"expected '0'..'{len(layout) - 1}'")
    out = [_checked_array(record[key], index, shape, dtype, max_len, origin)
           for index, (key, (shape, dtype, max_len)) in enumerate(
               zip(keys, layout, strict=True))]
    if compression == "float16" and not np.array_equal(
            out[0], float16_header([shape for shape, _ in specs])):
        raise ModelMismatchError(f"the float16 header from {origin} does not "
                                 "describe this model's tensors")
    return out


def _checked_array(array: Array, index: int, shape: tuple[int, ...] | None, dtype: str,
                   max_len: int, origin: str) -> np.ndarray:
    """Return the array if its stype, dtype, shape and bytes are what is expected."""
    what = f"tensor {index} from {origin}"
    if array.stype != NUMPY_STYPE:
        raise ModelMismatchError(f"{what} has serialization {clean_text(array.stype, 40)!r}"
                                 f", expected {NUMPY_STYPE!r}")
    if array.dtype != dtype:
        raise ModelMismatchError(f"{what} is {clean_text(array.dtype, 40)}, the model "
                                 f"expects {dtype}")
    declared = tuple(array.shape) if isinstance(array.shape, (tuple, list)) else None
    if declared is None or not all(type(d) is int for d in declared):
        raise ModelMismatchError(f"{what} declares no valid shape")
    if shape is None:
        if len(declared) != 1 or not 0 <= declared[0] <= max_len:
            raise ModelMismatchError(f"{what} declares shape {clean_text(declared, 60)}, "
                                     f"expected one dimension of at most {max_len}")
        shape = declared
    elif declared != shape:
        raise ModelMismatchError(f"weight {what} is {clean_text(declared, 60)} {dtype}, "
                                 f"the model expects {shape} {dtype}")
    return read_npy(array.data, dtype, shape)
