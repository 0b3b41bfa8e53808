"""Every metric the device sends is in the metric catalog, and valid there.

The real ClientApp handlers run on a small CNN and the builtin digits, once in this
process and once through a warm trainer on a socket, as a device runs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.client import client_app
from fedfleet.shared.metrics import CATALOG, Phase
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

SETTINGS = RunSettings(fedfleet_version=__version__, local_epochs=1, batch_size=32,
                       optimizer="sgd", momentum=0.9, client_eval="with-train")
NODE = {"data-path": "builtin:digits", "partition-id": 0, "num-partitions": 8}


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    """Flower refuses to build messages outside a run unless these are set."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 77, 0, 1
    yield
    TaskIdentity.node_id = 0


@pytest.fixture(scope="module")
def weights() -> list[np.ndarray]:
    """Return the run's initial CNN weights."""
    import keras

    from fedfleet.shared.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("cnn", SETTINGS.shape, SETTINGS.num_classes,
                        SETTINGS.learning_rate, SETTINGS.optimizer, SETTINGS.momentum)
    return [np.asarray(w) for w in model.get_weights()]


def _sent(phase: Phase, weights: list[np.ndarray], **node: Any) -> dict[str, Any]:
    """Return the metrics the ClientApp replies to one ``phase`` message."""
    content = RecordDict({"arrays": ArrayRecord(weights),
                          "config": ConfigRecord({"server-round": 1})})
    context = Context(run_id=77, node_id=5, node_config={**NODE, **node},
                      state=RecordDict(), run_config=dict(SETTINGS.to_run_config()))
    reply = client_app.app(Message(content, 5, phase), context)
    assert not reply.has_error(), reply.error
    return dict(reply.content.metric_records["metrics"])


def _assert_catalogued(phase: Phase, metrics: dict[str, Any]) -> None:
    unknown = set(metrics) - set(CATALOG.sent_in(phase))
    assert not unknown, f"{phase} metrics missing from the catalog: {sorted(unknown)}"
    assert CATALOG.check(metrics, phase).dropped == []


def test_in_process_metrics_are_all_in_the_catalog(weights: list[np.ndarray]) -> None:
    """Train (with the global model scored first) and evaluate, no warm trainer."""
    # Execute
    train = _sent("train", weights)
    evaluate = _sent("evaluate", weights)
    # Assert
    _assert_catalogued("train", train)
    _assert_catalogued("evaluate", evaluate)
    assert train["warm"] == 0.0 and evaluate["warm"] == 0.0
    assert {"train_loss", "sgd_momentum", "global_eval_loss", "handler_s"} <= set(train)
    assert {"eval_loss", "eval_accuracy", "handler_s"} <= set(evaluate)


def test_warm_trainer_metrics_are_all_in_the_catalog(
        weights: list[np.ndarray], served: Path) -> None:
    """The same through the warm trainer, which adds its own memory peak."""
    # Execute
    train = _sent("train", weights, **{"trainer-socket": str(served)})
    evaluate = _sent("evaluate", weights, **{"trainer-socket": str(served)})
    # Assert
    _assert_catalogued("train", train)
    _assert_catalogued("evaluate", evaluate)
    assert train["warm"] == 1.0 and "trainer_peak_rss_mb" in train
    assert evaluate["warm"] == 1.0 and "trainer_peak_rss_mb" in evaluate


def test_a_cross_clock_reading_below_zero_is_left_out(
        weights: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """A server clock ahead of the device's: queue_s is not sent, never negative."""
    # Prepare
    started = time.time()
    monkeypatch.setattr(client_app, "process_started_at", lambda: started)
    content = RecordDict({"arrays": ArrayRecord(weights)})
    msg = Message(content, 5, "evaluate")
    msg.metadata.created_at = started + 0.65  # the SuperLink's clock is 0.65 s ahead
    context = Context(run_id=77, node_id=5, node_config=dict(NODE), state=RecordDict(),
                      run_config=dict(SETTINGS.to_run_config()))
    # Execute
    reply = client_app.app(msg, context)
    metrics = dict(reply.content.metric_records["metrics"])
    # Assert
    assert "queue_s" not in metrics and metrics["startup_s"] >= 0
    _assert_catalogued("evaluate", metrics)


def test_a_wall_clock_step_back_leaves_handler_s_out() -> None:
    """The device's clock stepped back during the handler: no negative handler_s."""
    # Prepare
    msg = Message(RecordDict(), 5, "evaluate")
    entered = time.time() + 30.0  # as if the clock went back 30 s since the handler began
    # Execute
    metrics = client_app._with_timing({}, msg, entered, warm=False)
    # Assert
    assert "handler_s" not in metrics
    assert all(CATALOG[k].refusal(v) is None for k, v in metrics.items())
