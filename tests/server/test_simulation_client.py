"""The simulation's ClientApp: each virtual device trains as if alone in its process.

A virtual device's work does not depend on which devices the (reused) actor process
served before, and a device ClientApp ignores the plan.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedfleet.client import client_app as device_app
from fedfleet.server.simulation import client_app as sim_app
from fedfleet.server.simulation.plan import PLACEMENT_KEY, RUN_CONFIG_KEY, SimulationPlan
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

SETTINGS = RunSettings(fedfleet_version=__version__, local_epochs=1, batch_size=16)
PLAN = SimulationPlan(devices=4, data=("builtin:digits",))
RUN_CONFIG = {**SETTINGS.to_run_config(), RUN_CONFIG_KEY: PLAN.to_json()}


pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture(scope="module")
def global_weights() -> list[np.ndarray]:
    """Return the run's initial CNN weights."""
    import keras

    from fedfleet.shared.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("cnn", SETTINGS.shape, SETTINGS.num_classes,
                        SETTINGS.learning_rate)
    return [np.asarray(w) for w in model.get_weights()]


def _train_message(weights: list[np.ndarray], node: int, server_round: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(weights),
                          "config": ConfigRecord({"server-round": server_round})})
    return Message(content, node, "train")


def _context(device: int, state: RecordDict | None = None) -> Context:
    """Return a virtual node's context as Flower's simulation engine makes it."""
    return Context(run_id=77, node_id=100 + device,
                   node_config={"partition-id": device, "num-partitions": PLAN.devices},
                   state=state if state is not None else RecordDict(),
                   run_config=dict(RUN_CONFIG))


def _train(weights: list[np.ndarray], device: int, server_round: int = 2,
           context: Context | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    reply = sim_app.train(_train_message(weights, 100 + device, server_round),
                          context or _context(device))
    assert not reply.has_error(), reply.error
    metrics = dict(reply.content.metric_records["metrics"])
    return reply.content.array_records["arrays"].to_numpy_ndarrays(), metrics


def _fresh_process() -> None:
    """Start over as a new actor process would: no cached trainers, no Keras state."""
    import keras

    device_app._trainer.cache_clear()
    keras.backend.clear_session()


def test_a_device_after_others_trains_as_if_alone(global_weights: list[np.ndarray]
                                                  ) -> None:
    """B after A, and B again after B, give exactly what B gives in a fresh process."""
    _fresh_process()
    _train(global_weights, device=0)
    after_a, metrics_after_a = _train(global_weights, device=1)
    again, _ = _train(global_weights, device=1)  # its cached trainer: no optimizer state kept
    _fresh_process()
    fresh, metrics_fresh = _train(global_weights, device=1)

    for left, right in zip(after_a, fresh, strict=True):
        np.testing.assert_array_equal(left, right)
    for left, right in zip(again, fresh, strict=True):
        np.testing.assert_array_equal(left, right)
    assert metrics_after_a["train_loss"] == metrics_fresh["train_loss"]
    assert metrics_after_a["num-examples"] == metrics_fresh["num-examples"]
    assert "queue_s" not in metrics_fresh and "startup_s" not in metrics_fresh


def _optimizer_state(context: Context) -> list[np.ndarray]:
    return context.state.array_records[sim_app.OPTIMIZER_STATE].to_numpy_ndarrays()


def test_a_device_keeps_its_optimizer_state_between_rounds_as_a_warm_trainer(
        global_weights: list[np.ndarray]) -> None:
    """Adam's step and moments carry over in the node's context, whoever ran before."""
    _fresh_process()
    context = _context(1)
    new, metrics = _train(global_weights, device=1, server_round=1, context=context)
    steps = int(np.ceil(metrics["num-examples"] / SETTINGS.batch_size))
    first = _optimizer_state(context)
    assert int(first[0]) == steps  # Keras's optimizer "iteration" comes first

    def second_round(after_other_device: bool) -> tuple[list[np.ndarray], Context]:
        carried = _context(1, RecordDict({sim_app.OPTIMIZER_STATE: ArrayRecord(first)}))
        _fresh_process()
        if after_other_device:
            _train(global_weights, device=0, server_round=2)
        return _train(new, device=1, server_round=2, context=carried)[0], carried

    after_other, carried = second_round(after_other_device=True)
    alone, _ = second_round(after_other_device=False)
    for left, right in zip(after_other, alone, strict=True):
        np.testing.assert_array_equal(left, right)
    assert int(_optimizer_state(carried)[0]) == 2 * steps
    forgetful, _ = _train(new, device=1, server_round=2)  # the same round without state
    assert not all(np.array_equal(a, b) for a, b in zip(alone, forgetful, strict=True))


def test_devices_and_rounds_differ(global_weights: list[np.ndarray]) -> None:
    """Each device trains on its own partition, and a new round reshuffles."""
    one, metrics_one = _train(global_weights, device=1)
    two, metrics_two = _train(global_weights, device=2)
    later, _ = _train(global_weights, device=1, server_round=3)
    assert metrics_one["num-examples"] != metrics_two["num-examples"] or \
        not np.array_equal(one[0], two[0])
    assert not all(np.array_equal(a, b) for a, b in zip(one, later, strict=True))


def test_which_device_answers_its_partition_id() -> None:
    """The availability grid learns a node's device index from this query."""
    msg = Message(RecordDict(), 103, "query.simulated_device")
    reply = sim_app.which_device(msg, _context(3))
    assert reply.content.config_records["device"]["index"] == 3


def test_a_device_clientapp_never_takes_its_data_from_the_run_config(
        global_weights: list[np.ndarray]) -> None:
    """A plan naming other data in the run config changes nothing on a real device."""
    trap = SimulationPlan(devices=4, data=("/no/such/data.csv",))
    config = {**SETTINGS.to_run_config(), RUN_CONFIG_KEY: trap.to_json()}
    context = Context(run_id=77, node_id=5, node_config={"data-path": "builtin:digits"},
                      state=RecordDict(), run_config=config)
    reply = device_app.train(_train_message(global_weights, 5, 1), context)
    assert not reply.has_error()
    assert reply.content.metric_records["metrics"]["num-examples"] > 1000  # all of digits


def test_in_ray_a_reply_names_the_node_that_computed_it(
        global_weights: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """Train and evaluate replies carry the Ray node, actor and device; outside Ray, none."""
    # Prepare
    sim_app.ray_placement.cache_clear()
    outside = sim_app.train(_train_message(global_weights, 102, 1), _context(2))
    where = (("ray-node", "ab12"), ("ip", "10.213.0.2"), ("host", "edge"), ("actor", "ff"))
    monkeypatch.setattr(sim_app, "ray_placement", lambda: where)

    # Execute
    trained = sim_app.train(_train_message(global_weights, 102, 1), _context(2))
    evaluated = sim_app.evaluate(Message(RecordDict({"arrays": ArrayRecord(global_weights)}),
                                         103, "evaluate"), _context(3))

    # Assert
    assert PLACEMENT_KEY not in outside.content.config_records
    assert dict(trained.content.config_records[PLACEMENT_KEY]) == {
        **dict(where), "device": 2}
    assert evaluated.content.config_records[PLACEMENT_KEY]["device"] == 3
    assert evaluated.content.config_records[PLACEMENT_KEY]["ip"] == "10.213.0.2"
    assert trained.content.metric_records["metrics"]["num-examples"] > 0
