"""Keep the final global model on the device: ``.keras`` and ``.tflite`` in its home.

Runs where TensorFlow is loaded: in the warm trainer (``op = final_model``), or in the
ClientApp process when there is no trainer. The weights are checked against the
model the run's settings describe and against the digest the server computed, then
saved, converted to TFLite and listed in ``HOME/models/index.json``
(:mod:`fedfleet.shared.modelstore`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.client.nodedata import NodeData
from fedfleet.shared.atomic import new_temp_dir
from fedfleet.shared.errors import ConfigError, ModelMismatchError
from fedfleet.shared.fileio import weights_digest
from fedfleet.shared.modelstore import clean_metrics, models_dir, store_model
from fedfleet.shared.settings import RunSettings

HOME_KEY = "fedfleet-home"
"""Node-config key of the device's fedfleet home (set by ``fedfleet join``)."""


def home_of(node_config: Mapping[str, Any]) -> Path:
    """Return the device's fedfleet home: the node config's, else ``FLWR_HOME``.

    Raises
    ------
    ConfigError
        If neither is set (a SuperNode not started by ``fedfleet join``).
    """
    value = node_config.get(HOME_KEY) or os.environ.get("FLWR_HOME")
    if not value:
        raise ConfigError("this device has no fedfleet home to keep the model in: start "
                          "it with 'fedfleet join --home DIR'")
    return Path(str(value))


@contextlib.contextmanager
def _receiving(folder: Path) -> Iterator[Path]:
    """Yield a new folder in ``folder`` to build the files in; remove it afterwards."""
    work = new_temp_dir(folder / "receiving")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tflite(model: Any) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..."
        return bytes(converter.convert())


def store_final_model(home: Path, run_id: int, model: Any, weights: Sequence[np.ndarray],
                      info: tuple[int, Mapping[str, Any], str], settings: RunSettings,
                      node: NodeData) -> dict[str, Any]:
    """Save ``model`` (already holding ``weights``) as .keras and .tflite; index it.

    Parameters
    ----------
    home
        The device's fedfleet home.
    run_id
        The run, as Flower's context names it.
    model
        A Keras model of the run's architecture with the received weights set.
    weights
        The received weights (checked against the server's digest).
    info
        ``(round, metrics, weights digest)`` from the server's message.
    settings, node
        The run's settings and this device's data description (class names).

    Returns
    -------
    dict
        The index entry.

    Raises
    ------
    ModelMismatchError
        If the weights are not the ones the server sent (digest mismatch).
    """
    server_round, metrics, digest = info
    if weights_digest(weights) != digest:
        raise ModelMismatchError("the final model's weights do not match the digest the "
                                 "server sent; nothing was stored")
    folder = models_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    with _receiving(folder) as work:
        keras_file, tflite_file = work / "model.keras", work / "model.tflite"
        model.save(keras_file)
        tflite_file.write_bytes(_tflite(model))
        return store_model(home, run_id, server_round, keras_file, tflite_file, {
            "metrics": clean_metrics(metrics), "weights_sha256": digest,
            "model": settings.model, "input_shape": list(settings.shape),
            "num_classes": settings.num_classes, "class_names": node.class_list or [],
        })


def reply_of(entry: Mapping[str, Any]) -> dict[str, str | int]:
    """Return the flat reply the server logs: what was stored, with digests."""
    digests = entry.get("sha256") or {}
    return {"stored": f"models/{entry['files']['tflite'].removesuffix('.tflite')}",
            "round": int(entry["round"]), "weights-sha256": str(entry["weights_sha256"]),
            "keras-sha256": str(digests.get("keras", "")),
            "tflite-sha256": str(digests.get("tflite", ""))}
