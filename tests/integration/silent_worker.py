"""A device that takes the train message and never answers, for tests.

Run as ``python silent_worker.py --socket PATH``. The SuperNode and ClientApp in front
of it are the real ones and stay alive (their heartbeats go on, so Flower's 60 s
node-unavailable rule never fires); only the trainer hangs on every train request.
The ClientApp waits for it up to the run's round timeout, so the device answers
nothing a round can use. benchmarks/silent_device.py uses it too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedfleet.client import worker

real_handle = worker.handle


def handle(pool: worker.TrainerPool, header: dict[str, Any], arrays: list[np.ndarray]
           ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Hang on train requests; evaluate honestly."""
    if header["op"] == "train":
        while True:
            time.sleep(3600)
    return real_handle(pool, header, arrays)


worker.handle = handle
worker.main()
