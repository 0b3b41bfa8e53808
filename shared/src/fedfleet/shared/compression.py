"""Opt-in compression of what travels each round.

Downstream (server to client) the global weights go as float16 when compression is
on. Upstream (client to server) the client sends its *update* (new weights minus the
weights it received): as float16, or as int8 with one float32 scale per tensor. The
server adds the decoded update to the exact global weights before it validates and
aggregates, so strategies only ever see full-precision float32 weights.

float16 tensors travel packed, all of a message's in one pair of arrays: a header
(int64: count, then each tensor's ndim and dims) and the half-precision bytes, split
into a low and a high byte plane and deflated (zlib). The high bytes (sign and
exponent) repeat a lot, so this lossless step saves another 10-15 % on trained
weights and updates, and two arrays cost Flower fewer objects to ship than one each.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from fedfleet.shared.errors import ModelMismatchError
from fedfleet.shared.weights import WeightSpec

METHODS = ("none", "float16", "int8")


MAX_VALUES = 2**31
"""Most values a packed float16 header may announce (guards the inflate step)."""


Layout = tuple[tuple[int, ...] | None, str, int]
"""One array of an encoded update: its shape (None: one dimension of at most the
third item's length), its dtype, that length bound (0 when the shape is exact)."""


def float16_header(shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Return the packed float16 header of tensors of ``shapes`` (int64)."""
    values = [len(shapes)]
    for shape in shapes:
        values += [len(shape), *shape]
    return np.array(values, dtype=np.int64)


def update_layout(specs: Sequence[WeightSpec], method: str) -> list[Layout]:
    """Return what :func:`encode_update` sends for a model of ``specs``, per array.

    ``none``: each tensor as it is; ``float16``: the header and a payload bounded by
    zlib's worst case; ``int8``: an int8 tensor and a float32 scale per tensor.

    Raises
    ------
    ModelMismatchError
        If ``method`` is not a compression method.
    """
    shapes = [tuple(shape) for shape, _ in specs]
    if method == "none":
        return [(tuple(shape), dtype, 0) for shape, dtype in specs]
    if method == "float16":
        header = float16_header(shapes)
        raw = 2 * sum(math.prod(shape) for shape in shapes)
        bound = raw + raw // 500 + 64  # zlib's worst case is +0.03% and a few bytes
        return [(header.shape, "int64", 0), (None, "uint8", bound)]
    if method == "int8":
        return [item for shape in shapes
                for item in ((shape, "int8", 0), ((1,), "float32", 0))]
    raise ModelMismatchError(f"unknown compression {method!r}")


def pack_float16(tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Return ``[header, payload]`` holding every tensor as float16.

    The header (int64) is the tensor count, then each tensor's ndim and dims; the
    payload (uint8) is all the float16 values, split into a low and a high byte plane
    and deflated.

    Raises
    ------
    ValueError
        If a tensor is not floating point.
    """
    halves = []
    for tensor in tensors:
        if not np.issubdtype(tensor.dtype, np.floating):
            raise ValueError(f"float16 compression needs floating-point tensors, got "
                             f"{tensor.dtype}; run without --compression")
        halves.append(np.asarray(tensor, dtype=np.float16).reshape(-1))
    values = np.concatenate(halves) if halves else np.zeros(0, np.float16)
    planes = values.view(np.uint8).reshape(-1, 2).T.tobytes()
    return [float16_header([t.shape for t in tensors]),
            np.frombuffer(zlib.compress(planes, 6), dtype=np.uint8)]


def _shapes(header: np.ndarray, what: str) -> list[tuple[int, ...]]:
    dims = [int(d) for d in header.reshape(-1)] if header.dtype == np.int64 else []
    shapes: list[tuple[int, ...]] = []
    pos = 1
    while dims and len(shapes) < dims[0] and pos < len(dims):
        ndim = dims[pos]
        shape = tuple(dims[pos + 1:pos + 1 + ndim])
        if ndim < 0 or len(shape) != ndim or any(d < 0 for d in shape):
            break
        shapes.append(shape)
        pos += 1 + ndim
    if not dims or len(shapes) != dims[0] or pos != len(dims):
        raise ModelMismatchError(f"{what} is not a packed float16 header")
    return shapes


def unpack_float16(arrays: Sequence[np.ndarray], what: str,
                   expect: Sequence[tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """Invert :func:`pack_float16`; return float32 tensors.

    With ``expect`` (the shapes the tensors must have) the header is compared with it
    before anything is inflated, so the work is bounded by the model's size, not by
    what the header announces.

    Raises
    ------
    ModelMismatchError
        If ``arrays`` are not a packed pair (``what`` names them in the message), or
        their shapes are not ``expect``.
    """
    if len(arrays) != 2 or arrays[1].dtype != np.uint8 or arrays[1].ndim != 1:
        raise ModelMismatchError(f"{what} is not a packed float16 pair (header, payload), "
                                 f"got {len(arrays)} arrays")
    shapes = _shapes(arrays[0], what)
    if expect is not None:
        _compare_shapes(shapes, [tuple(s) for s in expect], what)
    sizes = [math.prod(shape) for shape in shapes]
    count = sum(sizes)
    if count > MAX_VALUES:
        raise ModelMismatchError(f"{what} announces {count} values, too many")
    inflater = zlib.decompressobj()
    try:  # at most one byte more than the header needs: no inflating a bomb
        raw = inflater.decompress(arrays[1].tobytes(), 2 * count + 1)
    except zlib.error as err:
        raise ModelMismatchError(f"{what} does not inflate ({err})") from err
    if len(raw) != 2 * count or not inflater.eof:
        raise ModelMismatchError(f"{what} is not complete: its header needs "
                                 f"{2 * count} bytes")
    values = np.frombuffer(raw, np.uint8).reshape(2, count).T.copy().view(np.float16)
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(values[start:start + size].reshape(shape).astype(np.float32))
        start += size
    return out


def _compare_shapes(got: Sequence[tuple[int, ...]], want: Sequence[tuple[int, ...]],
                    what: str) -> None:
    if len(got) != len(want):
        raise ModelMismatchError(f"{what} has {len(got)} tensors, the model has "
                                 f"{len(want)}")
    for index, (have, need) in enumerate(zip(got, want, strict=True)):
        if have != need:
            text = str(have) if len(str(have)) <= 60 else str(have)[:57] + "..."
            raise ModelMismatchError(f"tensor {index} of {what} is {text}, the model "
                                     f"expects {need}")


def encode_weights(weights: Sequence[np.ndarray], method: str) -> list[np.ndarray]:
    """Prepare global weights for sending to clients (packed float16 if compressing)."""
    if method == "none":
        return list(weights)
    return pack_float16(weights)


def decode_weights(arrays: Sequence[np.ndarray], method: str) -> list[np.ndarray]:
    """Rebuild float32 global weights from what :func:`encode_weights` produced."""
    if method == "none":
        return list(arrays)
    return unpack_float16(arrays, "the global model")


def encode_update(new: Sequence[np.ndarray], base: Sequence[np.ndarray], method: str
                  ) -> list[np.ndarray]:
    """Encode the client's new weights for the trip to the server."""
    if method == "none":
        return list(new)
    deltas = [n.astype(np.float32) - b.astype(np.float32)
              for n, b in zip(new, base, strict=True)]
    if method == "float16":
        return pack_float16(deltas)
    if method == "int8":
        out: list[np.ndarray] = []
        for delta in deltas:
            peak = float(np.max(np.abs(delta))) if delta.size else 0.0
            scale = np.float32(peak / 127.0)  # the scale as it travels, float32
            if not 0 < scale < np.inf:  # all zero, or so small it rounds to 0
                scale = np.float32(1.0)
            out += [np.clip(np.rint(delta / scale), -127, 127).astype(np.int8),
                    np.array([scale], dtype=np.float32)]
        return out
    raise ValueError(f"unknown compression {method!r}: use one of {METHODS}")


def decode_update(arrays: Sequence[np.ndarray], base: Sequence[np.ndarray], method: str,
                  origin: str) -> list[np.ndarray]:
    """Rebuild full weights from what :func:`encode_update` produced.

    Raises
    ------
    ModelMismatchError
        If the arrays cannot be an encoded update of ``base``.
    """
    if method == "none":
        return list(arrays)
    if method == "float16":
        deltas = unpack_float16(arrays, f"float16 update from {origin}",
                                expect=[b.shape for b in base])
    elif method == "int8":
        deltas = _decode_int8(arrays, base, origin)
    else:
        raise ValueError(f"unknown compression {method!r}: use one of {METHODS}")
    if len(deltas) != len(base):  # pragma: no cover - both decoders check it first
        raise ModelMismatchError(f"update from {origin} has {len(deltas)} tensors, the "
                                 f"model has {len(base)}")
    out = []
    for index, (delta, b) in enumerate(zip(deltas, base, strict=True)):
        if delta.shape != b.shape:
            raise ModelMismatchError(f"update tensor {index} from {origin} is "
                                     f"{delta.shape}, the model expects {b.shape}")
        out.append((b.astype(np.float32) + delta.astype(np.float32)).astype(b.dtype))
    return out


def _decode_int8(arrays: Sequence[np.ndarray], base: Sequence[np.ndarray], origin: str
                 ) -> list[np.ndarray]:
    """Return the float32 deltas of an int8 update, every part checked first."""
    if len(arrays) != 2 * len(base):
        raise ModelMismatchError(f"int8 update from {origin} has {len(arrays)} "
                                 f"arrays, expected {2 * len(base)}")
    deltas = []
    for index, (q, s, b) in enumerate(zip(arrays[0::2], arrays[1::2], base, strict=True)):
        if q.dtype != np.int8 or q.shape != b.shape:
            raise ModelMismatchError(f"int8 update tensor {index} from {origin} is "
                                     f"{q.shape} {q.dtype}, expected {b.shape} int8")
        scale = float(s.reshape(-1)[0]) if s.size == 1 and s.dtype.kind == "f" else None
        if scale is None or not math.isfinite(scale) or scale < 0:
            raise ModelMismatchError(f"int8 update tensor {index} from {origin} has no "
                                     "finite non-negative scale")
        deltas.append(q.astype(np.float32) * np.float32(scale))
    return deltas
