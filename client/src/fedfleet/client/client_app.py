"""The Flower ClientApp: unpacks messages, hands them to the trainer, packs replies.

It imports no TensorFlow: with a warm trainer running (``fedfleet join`` starts one
and puts its socket in the node config as ``trainer-socket``), the work happens
there; without one, or if it cannot be reached, a trainer in this process does it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfleet.client import worker
from fedfleet.client.final_model import home_of, reply_of, store_final_model
from fedfleet.client.nodedata import NodeData
from fedfleet.client.training import LocalTrainer
from fedfleet.shared import delivery
from fedfleet.shared.compression import decode_weights, encode_update
from fedfleet.shared.constants import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedfleet.shared.errors import VersionMismatchError
from fedfleet.shared.logs import get_logger
from fedfleet.shared.metrics import CATALOG
from fedfleet.shared.process import peak_rss_mb, process_started_at
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__, compatible

log = get_logger()

app = ClientApp()

Result = tuple[dict[str, Any], list[np.ndarray]]
"""What a trainer returns: its metrics (or answer) and weights."""


@lru_cache(maxsize=4)
def _trainer(node: NodeData) -> LocalTrainer:
    return LocalTrainer(node)


def _prepare(msg: Message, context: Context) -> RunSettings:
    """Check versions and read settings; raise with a message the server will log."""
    settings = RunSettings.from_run_config(context.run_config)
    if not compatible(settings.fedfleet_version, __version__):
        raise VersionMismatchError(
            f"server runs fedfleet {settings.fedfleet_version}, this client "
            f"{__version__}; install the matching release on the client "
            f"(pip install 'fedfleet-client~={settings.fedfleet_version}')"
        )
    return settings


def _received_weights(msg: Message, settings: RunSettings) -> list[np.ndarray]:
    """Return the global weights, unpacked to float32 if the run compresses them."""
    arrays = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    return decode_weights(arrays, settings.compression)


def _in_trainer(op: str, context: Context, settings: RunSettings,
                weights: list[np.ndarray], local: Callable[[LocalTrainer, NodeData], Result],
                **options: Any) -> tuple[dict[str, Any], list[np.ndarray], bool]:
    """Do ``op`` in the warm trainer if there is one, else ``local`` in this process.

    Returns the metrics (or answer), the weights, and whether the warm trainer did it.
    ``options`` go to :func:`fedfleet.client.worker.call`.
    """
    node = dict(context.node_config)
    socket_path = node.get("trainer-socket")
    if socket_path:
        try:
            reply, out = worker.call(Path(str(socket_path)), op, context.run_id,
                                     dict(context.run_config), node, weights,
                                     timeout=settings.round_timeout, **options)
            return reply["metrics"], out, True
        except worker.WorkerUnavailable as err:
            log.warning("Warm trainer unavailable (%s); doing %s in this process", err, op)
    data = NodeData.from_node_config(node)
    answer, out = local(_trainer(data), data)
    return answer, out, False


def _with_timing(metrics: dict[str, Any], msg: Message, entered: float, warm: bool
                 ) -> dict[str, Any]:
    """Add who did the work, where this message's time went, the process's memory.

    ``queue_s``: message created on the server until this process started (delivery
    polling and process launch); ``startup_s``: process start until the handler ran
    at ``entered`` (Python, Flower and fedfleet imports); ``handler_s``: the handler
    itself (on the wall clock, like the process start: a clock step back can make it
    negative). ``queue_s`` spans the server's clock and this device's, and ``startup_s``
    reads the process start at tick resolution. A reading the catalog refuses (below
    0) is only clock offset, rounding or a step, so it is left out.
    """
    started = process_started_at()
    now = time.time()
    metrics["warm"] = 1.0 if warm else 0.0
    timings = [("handler_s", now - entered)]
    if started is not None:
        timings += [("queue_s", started - msg.metadata.created_at),
                    ("startup_s", entered - started)]
    for key, value in timings:
        if CATALOG[key].refusal(value) is None:
            metrics[key] = value
    metrics["clientapp_peak_rss_mb"] = peak_rss_mb()
    return metrics


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this device's data."""
    entered = time.time()
    settings = _prepare(msg, context)
    config = msg.content.config_records.get(CONFIG_KEY)
    mu = config.get("proximal-mu", 0.0) if config is not None else 0.0  # set by FedProx
    if isinstance(mu, bool) or not isinstance(mu, (int, float)):
        raise ValueError(f"proximal-mu must be a number, got {mu!r}")
    weights = _received_weights(msg, settings)

    def fit(trainer: LocalTrainer, _: NodeData) -> Result:
        new, metrics = trainer.train(weights, settings, proximal_mu=float(mu))
        return metrics, new

    metrics, new, warm = _in_trainer("train", context, settings, weights, fit,
                                     proximal_mu=float(mu))
    log.info("Trained on %d samples in %.2fs (loss %.4f)", int(metrics["num-examples"]),
             metrics["train_time_s"], metrics["train_loss"])
    payload = encode_update(new, weights, settings.compression)
    content = RecordDict({ARRAYS_KEY: ArrayRecord(payload),
                          METRICS_KEY: MetricRecord(_with_timing(metrics, msg, entered,
                                                                  warm))})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this device's hold-out data."""
    entered = time.time()
    settings = _prepare(msg, context)
    weights = _received_weights(msg, settings)
    metrics, _, warm = _in_trainer("evaluate", context, settings, weights,
                                   lambda trainer, _: (trainer.evaluate(weights, settings),
                                                       []))
    content = RecordDict({METRICS_KEY: MetricRecord(_with_timing(metrics, msg, entered,
                                                                 warm))})
    return Message(content=content, reply_to=msg)


@app.query(delivery.ACTION)
def final_model(msg: Message, context: Context) -> Message:
    """Keep the run's final global model under this device's fedfleet home.

    Stores ``.keras`` and ``.tflite`` and indexes them (see
    :mod:`fedfleet.client.final_model`); the conversion runs in the warm trainer
    when there is one. Replies with what was stored and the weights' digest.
    """
    settings = _prepare(msg, context)
    record = msg.content.config_records.get(delivery.INFO_KEY) or ConfigRecord()
    info = {k: v for k, v in record.items() if isinstance(v, (bool, int, float, str))}
    parsed = delivery.unpack_info(info)
    arrays = msg.content.array_records.get(ARRAYS_KEY)
    if arrays is None:
        raise VersionMismatchError("the final-model message carries no weights")
    weights = arrays.to_numpy_ndarrays()  # sent uncompressed, whatever the run used
    home = home_of(dict(context.node_config))

    def convert(trainer: LocalTrainer, data: NodeData) -> Result:
        model = trainer.model(settings, weights)
        return reply_of(store_final_model(home, context.run_id, model, weights, parsed,
                                          settings, data)), []

    stored, _, _ = _in_trainer("final_model", context, settings, weights, convert,
                               extra={"home": str(home), "info": info})
    log.info("Stored the final model of run %s (round %s) in %s", context.run_id,
             stored["round"], home / str(stored["stored"]))
    content = RecordDict({delivery.INFO_KEY: ConfigRecord(stored)})
    return Message(content=content, reply_to=msg)
