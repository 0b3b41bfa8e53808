"""A virtual device: a SuperNode's life on the Fleet API, without TensorFlow.

It does what ``flower-supernode`` + fedfleet's ClientApp do, message for message:
activate its registered key, heartbeat every 30 s, poll for work every 3 s when idle
(Flower's fixed ``time.sleep(3)``), and for each message: ``get-run`` and ``get-fab``
once per run, pull every object of the message, confirm receipt, build the reply
fedfleet's ClientApp would send (the same ArrayRecord names, shapes and dtypes, encoded
with the run's compression by fedfleet's own codec; the same metric names), push the
reply and the objects the SuperLink asks for, and poll again at once.

"Training" is a sleep of the device's pace plus a small random step on the weights, so
a reply costs microseconds of CPU and what is measured is the server side.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message import make_message, remove_content_from_message
from flwr.common.config import get_fused_config_from_fab
from flwr.common.serde import fab_from_proto, message_from_proto, message_to_proto, run_from_proto
from flwr.proto.fab_pb2 import GetFabRequest, GetFabResponse
from flwr.proto.fleet_pb2 import (
    ActivateNodeRequest,
    ActivateNodeResponse,
    DeactivateNodeRequest,
    DeactivateNodeResponse,
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
)
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest, SendNodeHeartbeatResponse
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    ConfirmMessageReceivedResponse,
    ObjectTree,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.proto.node_pb2 import Node
from flwr.proto.run_pb2 import GetRunRequest, GetRunResponse
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
    iterate_object_tree,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedfleet.shared import delivery
from fedfleet.shared.compression import decode_weights, encode_update
from fedfleet.shared.constants import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY
from fedfleet.shared.fileio import weights_digest
from swarm.fleetapi import Deadline, FleetClient, RunNotRunning

HEARTBEAT_INTERVAL = 30.0
"""Seconds; Flower's ``HEARTBEAT_DEFAULT_INTERVAL``."""
IDLE_POLL = 3.0
"""Seconds a SuperNode sleeps after a poll that brought no message (fixed in 1.42)."""


@dataclass
class Pace:
    """How a device behaves: how long it trains, whether it vanishes."""

    train_s: float = 0.05
    """Seconds a train message takes ("training")."""
    examples: int = 100
    """Examples it claims (``num-examples``)."""
    poll_s: float = IDLE_POLL
    heartbeat_s: float = HEARTBEAT_INTERVAL
    """As ``fedfleet join --poll-interval`` / ``--heartbeat-interval`` set them."""
    vanish_in_round: int = 0
    """Leave without a word on the N-th train message it gets (0: never), and come back
    after ``away_s`` with the same key."""
    away_s: float = 20.0


@dataclass
class DeviceLog:
    """What one device did, for the swarm's report."""

    key: str = ""
    """The name of its key file."""
    train_s: float = 0.0
    """Its pace: seconds a train message takes."""
    node_id: int = 0
    activations: int = 0
    activated_after_s: float | None = None
    trained: list[str] = field(default_factory=list)
    """Round (the message's ``server-round``) of every train reply it pushed."""
    vanished: list[str] = field(default_factory=list)
    """Round of every train message it left without answering."""
    messages: list[tuple[str, str, float, float, float]] = field(default_factory=list)
    """(type, round, wall time pulled, objects pulled, replied) of every message."""
    stale: int = 0
    """Messages ignored because their run had ended (as a SuperNode does)."""
    evaluated: int = 0
    final_models: int = 0
    errors: list[str] = field(default_factory=list)


class ObjectUnavailable(Exception):
    """An object of a pulled message could not be had: the message is dropped."""


class VirtualDevice:
    """One device: its node key, its pace, and its loop."""

    def __init__(self, client: FleetClient, pace: Pace, seed: int) -> None:
        """Act as the owner of ``client``'s key, at ``pace``."""
        self.client = client
        self.pace = pace
        self.log = DeviceLog(train_s=pace.train_s)
        self._rng = np.random.default_rng(seed)
        self._node: Node | None = None
        self._runs: dict[int, str] = {}  # run id -> compression
        self._train_messages = 0

    async def run(self, started: float, stop: Deadline) -> DeviceLog:
        """Live until ``stop``; leave and come back if the pace says so."""
        while stop.left() > 0:
            vanished = await self._session(started, stop)
            if not vanished:
                break
            await asyncio.sleep(min(self.pace.away_s, stop.left()))
        return self.log

    async def _session(self, started: float, stop: Deadline) -> bool:
        """Activate, heartbeat and poll; return True if the device vanished."""
        response = await self.client.call_retrying(
            "activate-node", ActivateNodeRequest(public_key=self.client.public_key,
                                                 heartbeat_interval=self.pace.heartbeat_s),
            ActivateNodeResponse, stop)
        self._node = Node(node_id=response.node_id)
        self.log.node_id = response.node_id
        self.log.activations += 1
        if self.log.activated_after_s is None:
            self.log.activated_after_s = time.monotonic() - started
        beat = asyncio.create_task(self._heartbeat(stop))
        try:
            while stop.left() > 0:
                pulled = await self.client.call_retrying(
                    "pull-messages", PullMessagesRequest(node=self._node),
                    PullMessagesResponse, stop)
                if not pulled.messages_list:
                    await asyncio.sleep(min(self.pace.poll_s, stop.left()))
                    continue
                try:
                    if await self._handle(pulled.messages_list[0],
                                          pulled.message_object_trees[0], stop):
                        return True
                except RunNotRunning:  # a message of a run that ended while away
                    self.log.stale += 1
                except ObjectUnavailable as err:  # as a SuperNode: drop it, go on
                    self.log.errors.append(str(err)[:200])
        except TimeoutError:
            pass
        finally:
            beat.cancel()
        # Stopped (SIGTERM or the duration): sign off as a SuperNode does on SIGTERM.
        try:
            await self.client.call("deactivate-node", DeactivateNodeRequest(
                node_id=self._node.node_id), DeactivateNodeResponse, timeout=5.0)
        except Exception as err:  # the server may be gone already
            self.log.errors.append(f"deactivate: {type(err).__name__}"[:200])
        return False

    async def _heartbeat(self, stop: Deadline) -> None:
        while stop.left() > 0:
            # As Flower's HeartbeatSender: (interval - 5 s) x a random 0.7..0.9.
            await asyncio.sleep((self.pace.heartbeat_s - 5.0) * random.uniform(0.7, 0.9))
            try:
                await self.client.call("send-node-heartbeat", SendNodeHeartbeatRequest(
                    node=self._node, heartbeat_interval=self.pace.heartbeat_s),
                    SendNodeHeartbeatResponse, timeout=5.0)
            except Exception as err:  # a missed beat, as on a SuperNode
                self.log.errors.append(f"heartbeat: {type(err).__name__}: {err}"[:200])

    async def _handle(self, proto: MessageProto, tree: ObjectTree, stop: Deadline) -> bool:
        """Receive one message and reply to it; return True if the device vanished."""
        pulled_at = time.time()
        header = message_from_proto(proto)
        meta = header.metadata
        run_id = meta.run_id
        if run_id not in self._runs:
            run = await self.client.call_retrying(
                "get-run", GetRunRequest(node=self._node, run_id=run_id), GetRunResponse,
                stop)
            fab = await self.client.call_retrying(
                "get-fab", GetFabRequest(node=self._node, hash_str=run.run.fab_hash,
                                         run_id=run_id), GetFabResponse, stop)
            config = get_fused_config_from_fab(fab_from_proto(fab.fab).content,
                                               run_from_proto(run.run))
            self._runs[run_id] = str(config.get("compression", "none"))
        contents: dict[str, bytes] = {}
        for node in iterate_object_tree(tree):
            contents[node.object_id] = await self._pull_object(run_id, node.object_id,
                                                               stop)
        await self.client.call_retrying(
            "confirm-message-received", ConfirmMessageReceivedRequest(
                node=self._node, run_id=run_id, message_object_id=meta.message_id),
            ConfirmMessageReceivedResponse, stop)
        received_at = time.time()
        inflated = inflate_object_from_contents(meta.message_id, contents)
        assert isinstance(inflated, Message)
        message = make_message(meta, content=inflated.content)
        kind = meta.message_type
        config = message.content.config_records.get(CONFIG_KEY)
        run_round = str(config.get("server-round", meta.group_id)) if config else meta.group_id
        if kind == "train":
            self._train_messages += 1
            if self._train_messages == self.pace.vanish_in_round:
                self.log.vanished.append(run_round)
                return True
            await asyncio.sleep(self.pace.train_s)
            reply = self._train_reply(message, self._runs[run_id])
            self.log.trained.append(run_round)
        elif kind == "evaluate":
            reply = self._evaluate_reply(message)
            self.log.evaluated += 1
        elif kind == delivery.MESSAGE_TYPE:
            reply = self._final_model_reply(message)
            self.log.final_models += 1
        else:
            self.log.errors.append(f"unexpected message type {kind!r}")
            return False
        await self._push(reply, run_id, stop)
        self.log.messages.append((kind, run_round, pulled_at, received_at, time.time()))
        return False

    async def _pull_object(self, run_id: int, object_id: str, stop: Deadline) -> bytes:
        for _ in range(300):  # 60 s for the server to finish pushing it
            answer = await self.client.call_retrying(
                "pull-object", PullObjectRequest(node=self._node, run_id=run_id,
                                                 object_id=object_id),
                PullObjectResponse, stop)
            if not answer.object_found:
                raise ObjectUnavailable(f"object {object_id} not found")
            if answer.object_available:
                return bytes(answer.object_content)
            await asyncio.sleep(0.2)
        raise ObjectUnavailable(f"object {object_id} not available after 60 s")

    async def _push(self, reply: Message, run_id: int, stop: Deadline) -> None:
        # As flwr's run_clientapp.push_message: the reply's ID is its object ID.
        reply.metadata.__dict__["_message_id"] = reply.object_id
        proto = message_to_proto(remove_content_from_message(reply))
        with no_object_id_recompute():
            tree = get_object_tree(reply)
            objects = get_all_nested_objects(reply)
        answer = await self.client.call_retrying(
            "push-messages", PushMessagesRequest(
                node=self._node, messages_list=[proto], message_object_trees=[tree],
                clientapp_runtime_list=[self.pace.train_s]),
            PushMessagesResponse, stop)
        wanted = set(answer.objects_to_push)
        for object_id, obj in objects.items():  # children before parents
            if object_id in wanted:
                await self.client.call_retrying(
                    "push-object", PushObjectRequest(
                        node=self._node, run_id=run_id, object_id=object_id,
                        object_content=obj.deflate(), session_id=answer.session_id),
                    PushObjectResponse, stop)

    def _train_reply(self, message: Message, compression: str) -> Message:
        arrays = message.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
        weights = decode_weights(arrays, compression)
        new = [w + (self._rng.standard_normal(w.shape) * 1e-3).astype(w.dtype)
               for w in weights]
        metrics: dict[str, float] = {
            "num-examples": float(self.pace.examples),
            "train_loss": float(0.3 + 0.1 * random.random()),
            "train_accuracy": float(0.85 + 0.1 * random.random()),
            "train_time_s": self.pace.train_s,
        }
        config = message.content.config_records.get(CONFIG_KEY)
        if config is not None:
            metrics.update({"global_eval_loss": float(0.4 + 0.1 * random.random()),
                            "global_eval_accuracy": float(0.8 + 0.1 * random.random()),
                            "global_eval_examples": float(self.pace.examples // 4 or 1)})
        content = RecordDict({ARRAYS_KEY: ArrayRecord(encode_update(new, weights,
                                                                    compression)),
                              METRICS_KEY: MetricRecord(metrics)})
        return Message(content=content, reply_to=message)

    def _evaluate_reply(self, message: Message) -> Message:
        metrics = {"num-examples": float(self.pace.examples // 4 or 1),
                   "eval_loss": float(0.4 + 0.1 * random.random()),
                   "eval_accuracy": float(0.8 + 0.1 * random.random()),
                   "eval_time_s": 0.01}
        return Message(content=RecordDict({METRICS_KEY: MetricRecord(metrics)}),
                       reply_to=message)

    def _final_model_reply(self, message: Message) -> Message:
        arrays = message.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
        info = message.content.config_records.get(delivery.INFO_KEY) or ConfigRecord()
        run_round = int(info.get("round", 0))  # type: ignore[call-overload]
        stored = {"stored": f"models/run-{message.metadata.run_id}-round-{run_round:03d}",
                  "round": run_round, delivery.WEIGHTS_DIGEST: weights_digest(arrays),
                  "keras-sha256": "", "tflite-sha256": ""}
        return Message(content=RecordDict({delivery.INFO_KEY: ConfigRecord(stored)}),
                       reply_to=message)
