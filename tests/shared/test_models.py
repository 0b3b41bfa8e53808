"""Model builders and the weight checks both sides run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedfleet.shared.errors import ConfigError, ModelMismatchError
from fedfleet.shared.models import build_model, make_optimizer, resolve_builder
from fedfleet.shared.weights import check_weights, specs_of


def test_cnn_and_mlp_take_shape_and_classes_from_arguments() -> None:
    """Built-in models produce one probability per class."""
    cnn = build_model("cnn", (8, 8, 1), 10)
    mlp = build_model("mlp", (20,), 3)
    out = cnn.predict(np.zeros((2, 8, 8, 1), dtype=np.float32), verbose=0)
    assert out.shape == (2, 10)
    np.testing.assert_almost_equal(out.sum(axis=1), [1.0, 1.0], decimal=5)
    assert mlp.output_shape == (None, 3)


def test_cnn_refuses_flat_input() -> None:
    """The CNN needs images and says to use the MLP otherwise."""
    with pytest.raises(ConfigError, match="use model 'mlp'"):
        build_model("cnn", (20,), 3)


def test_custom_builder_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    """'module:function' loads a user's builder."""
    (tmp_path / "mymodels.py").write_text(
        "import keras\n"
        "def tiny(input_shape, num_classes):\n"
        "    return keras.Sequential([keras.Input(shape=input_shape),\n"
        "        keras.layers.Flatten(), keras.layers.Dense(num_classes, "
        "activation='softmax')])\n"
        "not_callable = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("mymodels:tiny", (4,), 2)
    assert [w.shape for w in model.get_weights()] == [(4, 2), (2,)]
    with pytest.raises(ConfigError, match="no function 'not_callable'"):
        resolve_builder("mymodels:not_callable")
    with pytest.raises(ConfigError, match="cannot import model module"):
        resolve_builder("nosuchmodule_xyz:tiny")
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        resolve_builder("resnet")
    sys.modules.pop("mymodels", None)


def test_check_weights_names_the_difference() -> None:
    """Count, shape and dtype mismatches are errors that say what differs."""
    weights = build_model("mlp", (5,), 2).get_weights()
    specs = specs_of(weights)
    check_weights(specs, weights, "test")
    with pytest.raises(ModelMismatchError, match="tensors"):
        check_weights(specs, weights[:-1], "the server")
    wrong_shape = [*weights[:-1], np.zeros(3, dtype=np.float32)]
    with pytest.raises(ModelMismatchError, match="tensor 5 .*\\(3,\\)"):
        check_weights(specs, wrong_shape, "node 7")
    wrong_dtype = [w.astype(np.float64) for w in weights]
    with pytest.raises(ModelMismatchError, match="float64"):
        check_weights(specs, wrong_dtype, "node 7")


def test_build_model_compiles_the_requested_optimizer() -> None:
    """Adam by default; SGD with the momentum and learning rate asked for."""
    import keras

    # Execute
    default = build_model("mlp", (4,), 2, 0.01)
    sgd = build_model("mlp", (4,), 2, 0.05, optimizer="sgd", momentum=0.9)
    plain = build_model("mlp", (4,), 2, 0.05, optimizer="sgd")
    # Assert
    assert isinstance(default.optimizer, keras.optimizers.Adam)
    assert float(default.optimizer.learning_rate) == pytest.approx(0.01)
    assert isinstance(sgd.optimizer, keras.optimizers.SGD)
    assert sgd.optimizer.momentum == pytest.approx(0.9)
    assert float(sgd.optimizer.learning_rate) == pytest.approx(0.05)
    assert isinstance(plain.optimizer, keras.optimizers.SGD)
    assert plain.optimizer.momentum == 0.0


@pytest.mark.parametrize(
    ("name", "momentum", "message"),
    [
        ("rmsprop", 0.0, "optimizer must be one of adam, sgd, not 'rmsprop'"),
        ("adam", 0.9, "momentum 0.9 needs optimizer sgd"),
        ("sgd", 1.0, r"momentum must be in \[0, 1\)"),
    ],
)
def test_make_optimizer_refuses_what_it_cannot_honour(name: str, momentum: float,
                                                      message: str) -> None:
    """An unknown optimizer, or a momentum Adam would ignore, is an error."""
    with pytest.raises(ConfigError, match=message):
        make_optimizer(name, 0.01, momentum)
