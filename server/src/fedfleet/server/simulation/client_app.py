"""The simulation's ClientApp: one virtual device, fedfleet's ClientApp handlers.

Flower's simulation engine gives each virtual node only ``partition-id`` and
``num-partitions``. This entry maps that index to the device's data through the
simulation's plan (:mod:`~fedfleet.server.simulation.plan`, in the run config) and
calls the real ClientApp's handlers (:mod:`fedfleet.client.client_app`) with that
node config. The device ClientApp itself never reads data paths from the run config.

Ray reuses one actor process for many virtual devices, so before every message the
trainer's model is dropped (built again after ``keras.backend.clear_session()``) and
the random seeds are set from (data seed, device, round): a device's result does not
depend on which devices the process served before. What a real device's warm trainer
keeps between rounds, its optimizer's state (Adam's moments and step), a virtual
device keeps in its Flower ``Context.state``, which the simulation engine holds per
node: it is restored before each train message and saved after it. TensorFlow's thread pools get
``--cpus-per-device`` threads, set before TensorFlow starts in the process.

This module imports ``fedfleet.client``: it is loaded by ``flwr-simulation`` and in
its Ray actors, which the ``fedfleet-server[simulation]`` extra provides for, and
never on a device.

Every train and evaluate reply names where it was computed (:data:`PLACEMENT_KEY`:
the Ray node's id and IP address, the host name, the actor and the device), so that a
run on a Ray cluster can tell which machines did its work.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import PARTITION_ID_KEY

from fedfleet.client import client_app as device_app
from fedfleet.client.nodedata import NodeData
from fedfleet.server.simulation.availability import device_reply
from fedfleet.server.simulation.plan import PLACEMENT_KEY, QUERY_ACTION, SimulationPlan
from fedfleet.shared import delivery
from fedfleet.shared.constants import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedfleet.shared.fileio import weights_digest
from fedfleet.shared.settings import RunSettings

app = ClientApp()


def device_index(context: Context) -> int:
    """Return the virtual device's index (Flower's ``partition-id``)."""
    return int(context.node_config[PARTITION_ID_KEY])


def device_context(context: Context) -> Context:
    """Return ``context`` with fedfleet's node config of this virtual device."""
    plan = SimulationPlan.from_run_config(context.run_config)
    node = plan.node_config(device_index(context))
    return Context(run_id=context.run_id, node_id=context.node_id, node_config=node,
                   state=context.state, run_config=context.run_config)


@lru_cache(maxsize=1)
def set_threads(threads: int) -> None:
    """Size TensorFlow's thread pools for this process, once, before TF starts."""
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started here: the environment decided
        pass


def device_seed(data_seed: int, device: int, server_round: int) -> int:
    """Return the seed of ``device``'s work in ``server_round``."""
    return int(np.random.SeedSequence([data_seed, device, server_round])
               .generate_state(1)[0] % (2**31 - 1))


def fresh_start(msg: Message, context: Context, node: Context) -> None:
    """Leave nothing of the previous virtual device in this process."""
    plan = SimulationPlan.from_run_config(context.run_config)
    set_threads(plan.cpus)  # before Keras: TensorFlow's pools are sized once, at start
    import keras

    settings = RunSettings.from_run_config(context.run_config)
    config = msg.content.config_records.get(CONFIG_KEY)
    server_round = config.get("server-round", 0) if config is not None else 0
    server_round = server_round if isinstance(server_round, int) else 0
    device_app._trainer(NodeData.from_node_config(node.node_config)).reset()
    keras.backend.clear_session()
    keras.utils.set_random_seed(device_seed(settings.data_seed, device_index(context),
                                            server_round))


PROCESS_TIMING = ("queue_s", "startup_s")
"""Per-process timings of a device's ClientApp; an actor process serves many devices,
so they say nothing about a virtual device and are left out."""


def without_process_timing(reply: Message) -> Message:
    """Drop :data:`PROCESS_TIMING` from a reply's metrics."""
    if not reply.has_error():
        metrics = reply.content.metric_records.get(METRICS_KEY)
        if metrics is not None:
            for key in PROCESS_TIMING:
                if key in metrics:
                    del metrics[key]
    return reply


@lru_cache(maxsize=1)
def ray_placement() -> tuple[tuple[str, str], ...]:
    """Return where this process runs in Ray (node id, node IP, host, actor); () outside Ray.

    A process never moves, so this is asked once.
    """
    try:
        import ray
    except ImportError:
        return ()
    if not ray.is_initialized():
        return ()
    runtime = ray.get_runtime_context()
    ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return (("ray-node", runtime.get_node_id()), ("ip", str(ip)),
            ("host", socket.gethostname()), ("actor", runtime.get_actor_id() or ""))


def with_placement(reply: Message, context: Context) -> Message:
    """Add :data:`PLACEMENT_KEY` (where this device's work ran) to a good reply in Ray."""
    where = ray_placement()
    if where and not reply.has_error():
        reply.content[PLACEMENT_KEY] = ConfigRecord(
            {**dict(where), "device": device_index(context)})
    return reply


OPTIMIZER_STATE = "fedfleet-optimizer"
"""``Context.state`` entry: the virtual device's optimizer variables after its last
train message (a real device's warm trainer keeps them in its compiled model)."""


def restore_optimizer(msg: Message, node: Context) -> None:
    """Build this device's model and put its saved optimizer state back, if any."""
    saved = node.state.array_records.get(OPTIMIZER_STATE)
    if saved is None:
        return
    settings = device_app._prepare(msg, node)
    trainer = device_app._trainer(NodeData.from_node_config(node.node_config))
    model = trainer.model(settings, device_app._received_weights(msg, settings))
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    values = saved.to_numpy_ndarrays()
    if [tuple(v.shape) for v in optimizer.variables] != [v.shape for v in values]:
        return  # another model: start its optimizer afresh
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)


def save_optimizer(node: Context) -> None:
    """Keep this device's optimizer state in its context for its next train message."""
    trainer = device_app._trainer(NodeData.from_node_config(node.node_config))
    model = trainer.compiled
    if model is not None:
        node.state[OPTIMIZER_STATE] = ArrayRecord(
            [np.asarray(v.numpy()) for v in model.optimizer.variables])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train as fedfleet's ClientApp does, on this virtual device's data."""
    node = device_context(context)
    fresh_start(msg, context, node)
    restore_optimizer(msg, node)
    reply = device_app.train(msg, node)
    if not reply.has_error():
        save_optimizer(node)
    return with_placement(without_process_timing(reply), context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate as fedfleet's ClientApp does, on this virtual device's hold-out."""
    node = device_context(context)
    fresh_start(msg, context, node)
    return with_placement(without_process_timing(device_app.evaluate(msg, node)), context)


@app.query(delivery.ACTION)
def final_model(msg: Message, context: Context) -> Message:
    """Acknowledge the final model: a virtual device has no home to keep it in."""
    device_app._prepare(msg, context)
    record = msg.content.config_records.get(delivery.INFO_KEY) or ConfigRecord()
    server_round = record.get("round", 0)
    arrays = msg.content.array_records.get(ARRAYS_KEY)
    digest = weights_digest(arrays.to_numpy_ndarrays()) if arrays is not None else ""
    stored: dict[str, Any] = {"stored": "nothing (virtual device)",
                                    "round": server_round
                                    if isinstance(server_round, int) else 0,
                                    delivery.WEIGHTS_DIGEST: digest,
                                    "keras-sha256": "", "tflite-sha256": ""}
    return Message(RecordDict({delivery.INFO_KEY: ConfigRecord(stored)}), reply_to=msg)


@app.query(QUERY_ACTION)
def which_device(msg: Message, context: Context) -> Message:
    """Say which virtual device this node is (for the availability grid)."""
    return device_reply(msg, device_index(context))
