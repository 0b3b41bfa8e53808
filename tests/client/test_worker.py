"""The warm trainer: socket protocol, per-run trainers, errors, restarts."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from fedfleet.client import wire, worker
from fedfleet.client.nodedata import NodeData
from fedfleet.client.supervisor import WorkerSupervisor
from fedfleet.shared.errors import DataError
from fedfleet.shared.models import build_model
from fedfleet.shared.process import flower_env
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

SETTINGS = RunSettings(local_epochs=1, fedfleet_version=__version__)


def test_wire_round_trip_keeps_dtypes_and_shapes() -> None:
    """Headers and arrays arrive as sent, without pickle."""
    left, right = socket.socketpair()
    arrays = [np.arange(6, dtype=np.float16).reshape(2, 3), np.array([1], np.int8)]
    wire.send(left, {"op": "x", "n": 1}, arrays)
    header, got = wire.receive(right)
    assert header == {"op": "x", "n": 1}
    for a, b in zip(arrays, got, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    left.close()
    with pytest.raises(ConnectionError):
        wire.receive(right)


def test_pool_keeps_runs_apart_and_bounded() -> None:
    """Each run gets its own trainer; only the newest KEEP_RUNS survive."""
    pool = worker.TrainerPool()
    node = NodeData()
    first = pool.get(1, node)
    assert pool.get(1, node) is first and pool.get(2, node) is not first
    pool.get(3, node)
    assert pool.get(1, node) is not first  # evicted, rebuilt fresh


def test_a_run_pool_trainer_rebuilds_the_model_for_another_optimizer() -> None:
    """The warm trainer's cached model follows the optimizer in the request's settings."""
    # Prepare
    pool = worker.TrainerPool()
    node = {"data-path": "builtin:digits", "partition-id": 0, "num-partitions": 3}
    weights = build_model("cnn", (8, 8, 1), 10).get_weights()
    sgd = SETTINGS.replace(optimizer="sgd", momentum=0.5)  # only the optimizer differs

    def train(settings: RunSettings) -> dict[str, float]:
        header = {"op": "train", "run_id": 7, "node": node,
                  "settings": settings.to_run_config()}
        reply, _ = worker.handle(pool, header, weights)
        metrics: dict[str, float] = reply["metrics"]
        return metrics

    # Execute
    adam, first_sgd, other = train(SETTINGS), train(sgd), train(sgd.replace(momentum=0.0))
    # Assert
    assert "sgd_momentum" not in adam
    assert (first_sgd["sgd_momentum"], other["sgd_momentum"]) == (0.5, 0.0)


def test_call_trains_and_evaluates_through_the_socket(served: Path) -> None:
    """Train then evaluate over the socket; the worker's errors keep their type."""
    assert oct(served.stat().st_mode & 0o777) == "0o600"
    weights = build_model("cnn", (8, 8, 1), 10).get_weights()
    node = {"data-path": "builtin:digits", "partition-id": 0, "num-partitions": 3}
    reply, new = worker.call(served, "train", 7, SETTINGS.to_run_config(), node,
                             weights, timeout=120)
    assert reply["metrics"]["num-examples"] > 0 and len(new) == len(weights)
    assert "global_eval_accuracy" in reply["metrics"]  # client-eval with-train
    reply, out = worker.call(served, "evaluate", 7, SETTINGS.to_run_config(), node,
                             new, timeout=120)
    assert out == [] and 0 <= reply["metrics"]["eval_accuracy"] <= 1
    with pytest.raises(DataError, match="does not exist"):
        worker.call(served, "train", 8, SETTINGS.to_run_config(),
                    {"data-path": "/nope"}, weights, timeout=60)


def test_call_without_a_worker_is_unavailable(tmp_path: Path) -> None:
    """No socket means fall back, not fail."""
    with pytest.raises(worker.WorkerUnavailable):
        worker.call(tmp_path / "none.sock", "train", 1, {}, {}, [], timeout=1)


def test_supervisor_restarts_a_crashed_worker(tmp_path: Path) -> None:
    """A killed worker comes back on the same socket."""
    path = tmp_path / "trainer.sock"
    sup = WorkerSupervisor(path, flower_env(tmp_path / "home"))
    sup.start()
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        first = sup.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        while (sup.pid == first or not path.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sup.pid != first and sup.restarts == 1
    finally:
        sup.stop()
    assert not path.exists()
