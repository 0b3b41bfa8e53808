"""Opt-in compression of what travels each round.

Downstream (server to client) the global weights go as float16 when compression is
on. Upstream (client to server) the client sends its *update* (new weights minus the
weights it received): as float16, or as int8 with one float32 scale per tensor. The
server adds the decoded update to the exact global weights before it validates and
aggregates, so strategies only ever see full-precision float32 weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedfleet.shared.errors import ModelMismatchError

METHODS = ("none", "float16", "int8")


def encode_weights(weights: Sequence[np.ndarray], method: str) -> list[np.ndarray]:
    """Prepare global weights for sending to clients."""
    if method == "none":
        return list(weights)
    return [w.astype(np.float16) if np.issubdtype(w.dtype, np.floating) else w
            for w in weights]


def encode_update(new: Sequence[np.ndarray], base: Sequence[np.ndarray], method: str
                  ) -> list[np.ndarray]:
    """Encode the client's new weights for the trip to the server."""
    if method == "none":
        return list(new)
    deltas = [n.astype(np.float32) - b.astype(np.float32)
              for n, b in zip(new, base, strict=True)]
    if method == "float16":
        return [d.astype(np.float16) for d in deltas]
    if method == "int8":
        out: list[np.ndarray] = []
        for delta in deltas:
            peak = float(np.max(np.abs(delta))) if delta.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
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
        deltas = list(arrays)
    elif method == "int8":
        if len(arrays) != 2 * len(base):
            raise ModelMismatchError(f"int8 update from {origin} has {len(arrays)} "
                                     f"arrays, expected {2 * len(base)}")
        deltas = [q.astype(np.float32) * float(s.reshape(-1)[0]) if s.size == 1 else q
                  for q, s in zip(arrays[0::2], arrays[1::2], strict=True)]
    else:
        raise ValueError(f"unknown compression {method!r}: use one of {METHODS}")
    if len(deltas) != len(base):
        raise ModelMismatchError(f"update from {origin} has {len(deltas)} tensors, the "
                                 f"model has {len(base)}")
    out = []
    for index, (delta, b) in enumerate(zip(deltas, base, strict=True)):
        if delta.shape != b.shape:
            raise ModelMismatchError(f"update tensor {index} from {origin} is "
                                     f"{delta.shape}, the model expects {b.shape}")
        out.append((b.astype(np.float32) + delta.astype(np.float32)).astype(b.dtype))
    return out
