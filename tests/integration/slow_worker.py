"""A device that answers every train message, but ``SLOW_S`` seconds late, for tests.

Run as ``python slow_worker.py --socket PATH [--delay SECONDS]``: the real trainer,
which waits before each train request as a device under emulation would (an arm64
board emulated on x86 takes about 20 s a round). The SuperNode and ClientApp in front
of it are the real ones. Evaluate and final-model requests are not slowed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from fedfleet.client import worker

SLOW_S = 20.0
real_handle = worker.handle


def handle(pool: worker.TrainerPool, header: dict[str, Any], arrays: list[np.ndarray]
           ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Wait ``SLOW_S`` seconds before a train request; then do the honest work."""
    if header["op"] == "train":
        time.sleep(SLOW_S)
    return real_handle(pool, header, arrays)


if "--delay" in sys.argv:
    at = sys.argv.index("--delay")
    SLOW_S = float(sys.argv[at + 1])
    del sys.argv[at:at + 2]
worker.handle = handle
worker.main()
