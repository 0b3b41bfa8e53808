"""Local training and evaluation on a device's data, independent of Flower's messages.

A ``LocalTrainer`` keeps its data and compiled model between calls, so a
long-lived process can serve many rounds without reloading either.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedfleet.client.nodedata import NodeData
from fedfleet.shared.constants import NUM_EXAMPLES_KEY
from fedfleet.shared.errors import DataError
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import check_weights, specs_of


def load_node_data(node: NodeData, settings: RunSettings) -> tuple[np.ndarray, ...]:
    """Load, partition, shape and split a node's data: ``x_tr, y_tr, x_ev, y_ev``.

    Raises
    ------
    DataError
        If the data is missing, unreadable, empty, or does not fit the model.
    """
    from fedfleet.shared.data import fit_to_shape, load_dataset, partition, split_holdout

    data = load_dataset(node.data_path, label_column=node.label_column,
                        class_names=node.class_list)
    data = fit_to_shape(data, settings.shape)
    x, y = data.x, data.y
    if node.partition_id >= 0:
        idx = partition(y, node.partition_id, node.num_partitions, settings.partitioning,
                        settings.dirichlet_alpha, settings.data_seed)
        x, y = x[idx], y[idx]
    if int(y.max()) >= settings.num_classes:
        raise DataError(
            f"{data.source}: label {int(y.max())} but the model has "
            f"{settings.num_classes} classes; set the run's num-classes"
        )
    return split_holdout(x, y, settings.eval_fraction, settings.data_seed)


def model_key(settings: RunSettings) -> tuple[Any, ...]:
    """Return what a compiled model depends on: a trainer rebuilds it when this changes.

    The optimizer and its momentum are part of it, so a run with SGD never trains a
    model compiled with Adam (or with another momentum).
    """
    return (settings.model, settings.input_shape, settings.num_classes,
            settings.learning_rate, settings.optimizer, settings.momentum)


def optimizer_metrics(model: Any) -> dict[str, float]:
    """Return what the compiled model's optimizer is, for the server's record.

    ``sgd_momentum``: the momentum of the SGD the model was compiled with; absent with
    Adam (whose runs' records stay as they were). Read from the model, not the
    settings, so a device that trained with anything else cannot report it.
    """
    import keras

    if isinstance(model.optimizer, keras.optimizers.SGD):
        return {"sgd_momentum": float(model.optimizer.momentum)}
    return {}


def _restart_momentum(model: Any) -> None:
    """Zero SGD's momentum, so each round's local training starts from rest.

    As in FedAvg with local momentum, and as a ClientApp without the warm trainer
    (a fresh process per message) does anyway: the previous round's velocity belongs
    to weights that the new global model replaced.
    """
    for velocity in getattr(model.optimizer, "momentums", None) or ():
        velocity.assign(np.zeros(velocity.shape, dtype=velocity.dtype))


class LocalTrainer:
    """Trains and evaluates the shared model on one device's data."""

    def __init__(self, node: NodeData) -> None:
        """Remember where the data is; nothing is loaded until first use."""
        self.node = node
        self._data_key: tuple[Any, ...] | None = None
        self._data: tuple[np.ndarray, ...] = ()
        self._model_key: tuple[Any, ...] | None = None
        self._model: Any = None

    def data(self, settings: RunSettings) -> tuple[np.ndarray, ...]:
        """Return ``x_tr, y_tr, x_ev, y_ev``, loading them once per data setting."""
        key = (settings.input_shape, settings.num_classes, settings.partitioning,
               settings.dirichlet_alpha, settings.data_seed, settings.eval_fraction)
        if key != self._data_key:
            self._data = load_node_data(self.node, settings)
            self._data_key = key
        return self._data

    def reset(self) -> None:
        """Forget the compiled model (optimizer state, traced functions), keep the data.

        The next call builds the model again after ``keras.backend.clear_session()``,
        as a new process would. (A simulation reuses one process for many virtual
        devices; a real device keeps its model between rounds.)
        """
        self._model_key = None
        self._model = None

    @property
    def compiled(self) -> Any:
        """Return the compiled model of the last call, or None (none yet, or reset)."""
        return self._model

    def model(self, settings: RunSettings, weights: Sequence[np.ndarray]) -> Any:
        """Return the compiled model with ``weights`` set, after checking they fit it."""
        import keras

        from fedfleet.shared.models import build_model

        key = model_key(settings)
        if key != self._model_key:
            keras.backend.clear_session()
            self._model = build_model(settings.model, settings.shape,
                                      settings.num_classes, settings.learning_rate,
                                      settings.optimizer, settings.momentum)
            self._model_key = key
        check_weights(specs_of(self._model.get_weights()), weights, "the server")
        self._model.set_weights(list(weights))
        return self._model

    def train(
        self, weights: Sequence[np.ndarray], settings: RunSettings,
        proximal_mu: float = 0.0,
    ) -> tuple[list[np.ndarray], dict[str, float]]:
        """Train from ``weights`` for ``local_epochs``; return new weights and metrics.

        With ``proximal_mu > 0`` (FedProx) the loss gets ``mu/2 * ||w - w_global||^2``.
        With ``client_eval == "with-train"`` the received global weights are first
        evaluated on the hold-out (``global_eval_*`` metrics), which saves Flower a
        separate evaluate message per round.
        """
        t0 = time.perf_counter()
        x_tr, y_tr, x_ev, _ = self.data(settings)
        pre: dict[str, float] = {}
        if settings.client_eval == "with-train" and len(x_ev):
            scores = self.evaluate(weights, settings)
            pre = {"global_eval_loss": scores["eval_loss"],
                   "global_eval_accuracy": scores["eval_accuracy"],
                   "global_eval_examples": scores[NUM_EXAMPLES_KEY]}
        model = self.model(settings, weights)
        if settings.optimizer == "sgd":
            _restart_momentum(model)
        t_fit = time.perf_counter()
        if proximal_mu > 0:
            loss, acc = _fit_proximal(model, x_tr, y_tr, settings, proximal_mu)
        else:
            history = model.fit(x_tr, y_tr, epochs=settings.local_epochs,
                                batch_size=settings.batch_size, verbose=0,
                                shuffle=True)
            loss = float(history.history["loss"][-1])
            acc = float(history.history["accuracy"][-1])
        train_time = time.perf_counter() - t_fit
        new_weights = model.get_weights()
        if not all(np.all(np.isfinite(w)) for w in new_weights):
            raise DataError("training produced NaN or infinite weights; lower the "
                            "learning rate or check the data for extreme values")
        return new_weights, {
            NUM_EXAMPLES_KEY: float(len(x_tr)),
            "train_loss": loss,
            "train_accuracy": acc,
            "train_time_s": train_time,
            "client_time_s": time.perf_counter() - t0,
            **optimizer_metrics(model),
            **pre,
        }

    def evaluate(
        self, weights: Sequence[np.ndarray], settings: RunSettings
    ) -> dict[str, float]:
        """Evaluate ``weights`` on the local hold-out split."""
        _, _, x_ev, y_ev = self.data(settings)
        if len(x_ev) == 0:
            raise DataError("no local evaluation samples: the dataset has a single "
                            "sample or eval-fraction is 0")
        model = self.model(settings, weights)
        t0 = time.perf_counter()
        loss, acc = model.evaluate(x_ev, y_ev, batch_size=256, verbose=0)
        return {
            NUM_EXAMPLES_KEY: float(len(x_ev)),
            "eval_loss": float(loss),
            "eval_accuracy": float(acc),
            "eval_time_s": time.perf_counter() - t0,
        }


def _fit_proximal(
    model: Any, x: np.ndarray, y: np.ndarray, settings: RunSettings, mu: float
) -> tuple[float, float]:
    """Train with FedProx's proximal term; return the last epoch's loss and accuracy."""
    import tensorflow as tf

    anchors = [tf.constant(v.numpy()) for v in model.trainable_variables]
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    optimizer = model.optimizer

    @tf.function  # type: ignore[untyped-decorator]  # TensorFlow ships no type hints
    def step(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            probs = model(xb, training=True)
            loss = loss_fn(yb, probs)
            prox = tf.add_n([tf.reduce_sum(tf.square(v - a))
                             for v, a in zip(model.trainable_variables, anchors,
                                             strict=True)])
            total = loss + 0.5 * mu * prox
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(probs, axis=1), tf.cast(yb, tf.int64)), tf.float32))
        return loss * tf.cast(tf.shape(yb)[0], tf.float32), correct

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    loss_sum, correct_sum = 0.0, 0.0
    for epoch in range(settings.local_epochs):
        loss_sum, correct_sum = 0.0, 0.0
        batches = dataset.shuffle(len(x), seed=settings.data_seed + epoch).batch(
            settings.batch_size)
        for xb, yb in batches:
            batch_loss, batch_correct = step(xb, yb)
            loss_sum += float(batch_loss)
            correct_sum += float(batch_correct)
    return loss_sum / len(x), correct_sum / len(x)
