"""Shared fixtures and markers for fedfleet's tests."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports TensorFlow or Flower:
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Set Flower's task identity: it refuses to build messages outside a run without it.

    Use it with ``pytestmark = pytest.mark.usefixtures("task_identity")``; a test that
    plays a device sets ``TaskIdentity.node_id``, which is reset afterwards.
    """
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 77
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 1
    yield
    TaskIdentity.node_id = 0


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """Serve a warm trainer on a socket in a background thread; return the socket path."""
    from fedfleet.client import worker

    path = tmp_path / "trainer.sock"
    threading.Thread(target=worker.serve, args=(path,), daemon=True).start()
    for _ in range(200):
        if path.exists():
            break
        time.sleep(0.05)
    return path
