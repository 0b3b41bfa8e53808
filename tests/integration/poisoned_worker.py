"""A compromised device's trainer, for tests: trains like the real one, then poisons.

Run as ``python poisoned_worker.py MODE --socket PATH``; MODE is ``scale`` (update x1000),
``flip`` (update sign-flipped, x10), ``random`` (noise of the same norm), ``nan`` or
``none`` (honest). benchmarks/robustness.py uses it too.
The SuperNode and ClientApp in front of it are the real ones.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from fedfleet.client import worker

MODE = sys.argv.pop(1)
real_handle = worker.handle


def poison(trained: list[np.ndarray], received: list[np.ndarray]) -> list[np.ndarray]:
    """Return the poisoned weights the server will get instead of ``trained``."""
    rng = np.random.default_rng(0)
    out = []
    for new, old in zip(trained, received, strict=True):
        update = new - old
        if MODE == "none":
            pass
        elif MODE == "scale":
            update = update * 1000
        elif MODE == "flip":
            update = -10 * update
        elif MODE == "random":
            update = rng.normal(0, 1, update.shape) * np.linalg.norm(update) / max(
                np.sqrt(update.size), 1)
        elif MODE == "nan":
            update = np.full_like(update, np.nan)
        out.append((old + update).astype(new.dtype))
    return out


def handle(pool: worker.TrainerPool, header: dict[str, Any], arrays: list[np.ndarray]
           ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Return the real trainer's reply, with poisoned weights."""
    reply, weights = real_handle(pool, header, arrays)
    if header["op"] == "train":
        weights = poison(weights, arrays)
    return reply, weights


worker.handle = handle
worker.main()
