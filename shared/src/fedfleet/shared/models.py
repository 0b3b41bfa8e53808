"""Keras model builders, chosen by name or given as ``module:function``.

Keras is imported when a model is built, not when this module is: the command line
(``fedfleet --help``, option checks) resolves builders without loading TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

from fedfleet.shared.errors import ConfigError
from fedfleet.shared.settings import OPTIMIZERS

ModelBuilder = Callable[[tuple[int, ...], int], Any]
"""A function ``(input_shape, num_classes) -> uncompiled keras.Model`` ending in softmax."""


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def cnn(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Small CNN for images shaped (H, W, C); ``same`` padding keeps 8x8 inputs valid."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model 'cnn' needs image input (height,width,channels), got {input_shape}; "
            "use model 'mlp' for flat feature vectors"
        )
    keras = _keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2, padding="same"),
            layers.Conv2D(64, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2, padding="same"),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="cnn",
    )


def mlp(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Multi-layer perceptron for tabular rows; any input shape is flattened first."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="mlp",
    )


BUILTIN_MODELS: dict[str, ModelBuilder] = {"cnn": cnn, "mlp": mlp}


def resolve_builder(name: str) -> ModelBuilder:
    """Return the builder named ``name``: a built-in name or ``package.module:function``.

    Raises
    ------
    ConfigError
        If the name is unknown or the module or function cannot be loaded.
    """
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ConfigError(
            f"unknown model {name!r}: use one of {known} or 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import model module {module_name!r} ({err}); install it on the "
            "server and on every client, or put it on PYTHONPATH"
        ) from err
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise ConfigError(f"{module_name!r} has no function {attr!r} to build a model")
    return cast(ModelBuilder, builder)  # a user's function, loaded by name


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0) -> Any:
    """Return a fresh Keras optimizer: ``adam``, or ``sgd`` with ``momentum``.

    Raises
    ------
    ConfigError
        If the name is unknown, or ``momentum`` is given for Adam or is outside [0, 1).
    """
    keras = _keras()
    if name == "adam":
        if momentum:
            raise ConfigError(f"momentum {momentum:g} needs optimizer sgd (Adam has no "
                              "momentum setting): set optimizer sgd, or momentum 0")
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), not {momentum:g}")
        return keras.optimizers.SGD(learning_rate, momentum=float(momentum))
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    learning_rate: float = 0.005,
    optimizer: str = "adam",
    momentum: float = 0.0,
) -> Any:
    """Build and compile the model ``name`` (``optimizer``, sparse cross-entropy, accuracy).

    Raises
    ------
    ConfigError
        If the model, its classes or the optimizer settings are invalid.
    """
    keras = _keras()
    if num_classes < 2:
        raise ConfigError(f"num-classes must be at least 2, got {num_classes}")
    model = resolve_builder(name)(tuple(int(d) for d in input_shape), int(num_classes))
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model builder {name!r} returned {type(model).__name__}, "
                          "not a keras.Model")
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
