"""LocalTrainer on real data, and the ClientApp's version and weight checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfleet.client import training
from fedfleet.client.client_app import _prepare
from fedfleet.client.nodedata import NodeData
from fedfleet.client.training import LocalTrainer, load_node_data, model_key
from fedfleet.shared.errors import DataError, ModelMismatchError, VersionMismatchError
from fedfleet.shared.models import build_model
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

SETTINGS = RunSettings(local_epochs=3, fedfleet_version=__version__)
SGD = SETTINGS.replace(optimizer="sgd", momentum=0.9, learning_rate=0.05)


def _initial_weights(settings: RunSettings = SETTINGS) -> list[np.ndarray]:
    return build_model(settings.model, settings.shape, settings.num_classes,
                       settings.learning_rate).get_weights()


def test_node_config_round_trip_quotes_strings() -> None:
    """Paths become quoted TOML strings, which flower-supernode requires."""
    node = NodeData(data_path="/data/my set", partition_id=1, num_partitions=3)
    text = node.to_node_config()
    assert text == 'data-path="/data/my set" partition-id=1 num-partitions=3'
    import tomllib

    parsed = tomllib.loads(text.replace(" partition", "\npartition")
                           .replace(" num", "\nnum"))
    assert NodeData.from_node_config(parsed) == node


def test_training_learns_and_evaluation_uses_the_holdout() -> None:
    """A few local epochs on one partition beat chance on its hold-out."""
    trainer = LocalTrainer(NodeData(partition_id=0, num_partitions=3))
    start = _initial_weights()
    before = trainer.evaluate(start, SETTINGS)
    weights, metrics = trainer.train(start, SETTINGS)
    after = trainer.evaluate(weights, SETTINGS)
    assert metrics["num-examples"] > 200 and metrics["train_time_s"] > 0
    assert after["eval_accuracy"] > max(0.5, before["eval_accuracy"])
    assert after["num-examples"] + metrics["num-examples"] == pytest.approx(
        len(trainer.data(SETTINGS)[1]) + len(trainer.data(SETTINGS)[3]))


def test_fedprox_term_keeps_weights_closer_to_the_global_model() -> None:
    """With a large mu, local weights move less from the global ones."""
    trainer = LocalTrainer(NodeData(partition_id=1, num_partitions=3))
    start = _initial_weights()

    def drift(mu: float) -> float:
        weights, metrics = trainer.train(start, SETTINGS, proximal_mu=mu)
        assert 0 <= metrics["train_accuracy"] <= 1
        return float(sum(np.sum((w - s) ** 2) for w, s in zip(weights, start,
                                                                strict=True)))

    assert drift(5.0) < drift(0.0)


def test_weights_for_another_model_are_refused() -> None:
    """Weights of the wrong shapes fail with a mismatch error."""
    trainer = LocalTrainer(NodeData())
    other = _initial_weights(SETTINGS.replace(num_classes=5))
    with pytest.raises(ModelMismatchError, match="the server"):
        trainer.train(other, SETTINGS)


def test_data_that_does_not_fit_the_model(tmp_path: Path) -> None:
    """Labels beyond num-classes and flat data for an image model are refused."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 8, 8), dtype=np.uint8), y=np.arange(10) + 5)
    with pytest.raises(DataError, match="label 14 but the model has 10 classes"):
        load_node_data(NodeData(data_path=str(path)), SETTINGS)
    np.savez(path, x=np.zeros((10, 5), dtype=np.float32), y=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match="expects \\(8, 8, 1\\)"):
        load_node_data(NodeData(data_path=str(path)), SETTINGS)


class _Ctx:
    def __init__(self, run_config: dict[str, object]) -> None:
        self.run_config = run_config
        self.node_config = {"data-path": "builtin:digits"}


def test_client_refuses_a_server_of_another_release() -> None:
    """A version mismatch names both versions and the fix."""
    config = SETTINGS.replace(fedfleet_version="9.9.0").to_run_config()
    with pytest.raises(VersionMismatchError, match="server runs fedfleet 9.9.0"):
        _prepare(None, _Ctx(config))  # type: ignore[arg-type]
    assert _prepare(None, _Ctx(SETTINGS.to_run_config())) == SETTINGS  # type: ignore[arg-type]


def test_supernode_refusals_are_explained() -> None:
    """Known refusals in the SuperNode's output become one actionable sentence."""
    from fedfleet.client.node import explain

    assert "fedfleet nodes register" in str(explain(
        "ERROR : [code: 2004] Failed to activate SuperNode.\n"))
    assert "--node-key" in str(explain("x\n[code: 2001] SuperNode authentication is on"))
    assert "revoked" in str(explain(
        "httpx.HTTPStatusError: Client error '401 Unauthorized' for url "
        "'http://s:8000/v1/fleet/send-node-heartbeat'"))
    assert explain("all fine\n") is None


def test_bad_data_is_reported_and_rechecked_not_crash_looped(tmp_path: Path) -> None:
    """With --data-retry the node says what is wrong and joins once the data is fixed."""
    from fedfleet.client.node import wait_for_data

    data = tmp_path / "d.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,\n")  # row 3: missing label
    node = NodeData(data_path=str(data))
    with pytest.raises(DataError, match="label"):
        wait_for_data(node, retry=0)
    naps: list[float] = []

    def fix_then_sleep(seconds: float) -> None:
        naps.append(seconds)
        data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")

    assert "4 samples" in wait_for_data(node, retry=30, sleep=fix_then_sleep)
    assert naps == [30]


def test_the_model_cache_key_holds_the_optimizer_and_momentum() -> None:
    """Adam, plain SGD and SGD with two momenta are four different compiled models."""
    keys = {model_key(SETTINGS), model_key(SGD.replace(momentum=0.0)),
            model_key(SGD), model_key(SGD.replace(momentum=0.5))}
    assert len(keys) == 4
    assert model_key(SGD) == model_key(SGD.replace(num_rounds=7))  # not a model setting


def test_a_trainer_never_reuses_an_adam_model_for_sgd() -> None:
    """One trainer, Adam then SGD (same learning rate): the second compiles SGD."""
    import keras

    # Prepare
    trainer = LocalTrainer(NodeData(partition_id=0, num_partitions=3))
    start = _initial_weights()
    adam = SETTINGS.replace(local_epochs=1)
    sgd = adam.replace(optimizer="sgd", momentum=0.9)  # only the optimizer differs
    # Execute
    _, adam_metrics = trainer.train(start, adam)
    adam_model = trainer.model(adam, start)
    _, sgd_metrics = trainer.train(start, sgd)
    # Assert
    assert "sgd_momentum" not in adam_metrics  # Adam runs report what they did before
    assert isinstance(adam_model.optimizer, keras.optimizers.Adam)
    assert sgd_metrics["sgd_momentum"] == pytest.approx(0.9)
    assert isinstance(trainer.model(sgd, start).optimizer, keras.optimizers.SGD)
    assert trainer.model(sgd, start) is not adam_model


def test_sgd_with_momentum_learns() -> None:
    """SGD (lr 0.05, momentum 0.9) on one partition beats chance on its hold-out."""
    trainer = LocalTrainer(NodeData(partition_id=0, num_partitions=3))
    start = _initial_weights(SGD)
    before = trainer.evaluate(start, SGD)
    weights, metrics = trainer.train(start, SGD)
    after = trainer.evaluate(weights, SGD)
    assert after["eval_accuracy"] > max(0.5, before["eval_accuracy"])
    assert metrics["sgd_momentum"] == pytest.approx(0.9)


def test_fedprox_works_with_sgd() -> None:
    """FedProx's proximal step uses the compiled SGD and still pulls towards the start."""
    trainer = LocalTrainer(NodeData(partition_id=1, num_partitions=3))
    start = _initial_weights(SGD)

    def drift(mu: float) -> float:
        weights, metrics = trainer.train(start, SGD, proximal_mu=mu)
        assert 0 <= metrics["train_accuracy"] <= 1 and metrics["train_loss"] > 0
        assert metrics["sgd_momentum"] == pytest.approx(0.9)
        return float(sum(np.sum((w - s) ** 2) for w, s in zip(weights, start,
                                                                strict=True)))

    assert 0 < drift(5.0) < drift(0.0)


def test_each_round_starts_sgd_momentum_from_rest(monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """The warm trainer keeps the model between rounds, but not last round's velocity."""
    # Prepare: one round leaves a velocity behind
    trainer = LocalTrainer(NodeData(partition_id=0, num_partitions=3))
    start = _initial_weights(SGD)
    trainer.train(start, SGD.replace(local_epochs=1))
    model = trainer.model(SGD, start)
    assert any(np.any(v.numpy() != 0) for v in model.optimizer.momentums)
    seen: list[float] = []

    def fit(model: Any, *args: Any) -> tuple[float, float]:
        seen.append(sum(float(np.abs(v.numpy()).sum()) for v in model.optimizer.momentums))
        return 0.5, 0.5

    monkeypatch.setattr(training, "_fit_proximal", fit)
    # Execute: the next round
    trainer.train(start, SGD, proximal_mu=0.1)
    # Assert
    assert seen == [0.0]
