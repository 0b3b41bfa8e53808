"""The swarm speaks as a SuperNode and replies as fedfleet's ClientApp.

If Flower changes the headers a SuperNode sends, or fedfleet's intake stops accepting
what the swarm replies, the swarm would measure something else: these tests fail then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supercore.protobuf.client import ProtobufRequestContext
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor
from swarm.device import Pace, VirtualDevice
from swarm.fleetapi import Deadline, FleetClient, RunNotRunning, Stats, Unauthorized

from fedfleet.server.run.intake import Intake
from fedfleet.shared import delivery
from fedfleet.shared.compression import encode_weights
from fedfleet.shared.fileio import weights_digest
from fedfleet.shared.weights import specs_of

BASE = [np.zeros((3, 3, 1, 4), np.float32), np.zeros(4, np.float32),
        np.ones((16, 10), np.float32), np.zeros(10, np.float32)]


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield


def _flower_headers(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """Return the headers Flower's own SuperNode interceptors put on a request."""
    from flwr.supercore.interceptors.http.runtime_version import (
        RuntimeVersionHttpInterceptor,
    )

    request = httpx.Request("POST", "https://x/v1/fleet/pull-messages")
    seen: dict[str, str] = {}
    context = ProtobufRequestContext("/flwr.proto.Fleet/PullMessages", None,  # type: ignore[arg-type]
                                     request)

    def done(ctx: ProtobufRequestContext) -> httpx.Response:
        seen.update(ctx.request.headers)
        return httpx.Response(200, request=ctx.request)

    auth = NodeAuthHttpInterceptor(key, key.public_key())
    RuntimeVersionHttpInterceptor("SuperNode").intercept(
        context, lambda ctx: auth.intercept(ctx, done))
    return seen


def test_headers_are_the_supernodes() -> None:
    """Same header names as Flower's SuperNode, same values where they are not signed."""
    # Prepare
    key = ec.generate_private_key(ec.SECP384R1())
    flower = _flower_headers(key)
    client = FleetClient(httpx.AsyncClient(), "https://x", key, Stats())
    # Execute
    ours = {**client._static, **client.auth_headers()}  # what is sent
    # Assert
    assert set(ours) >= {k for k in flower if k.startswith("flwr-")}
    for name in ("flwr-public-key", "flwr-package-version", "flwr-component-name"):
        assert ours[name] == flower[name], name
    assert client.public_key == public_key_to_bytes(key.public_key())


def _transport(status: int) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, text="no"))


@pytest.mark.parametrize(("status", "error"), [(401, Unauthorized),
                                               (403, RunNotRunning)])
def test_refusals_are_told_apart(status: int, error: type[Exception]) -> None:
    """401 ends a device, 403 (the run is over) only drops that message."""
    from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse

    key = ec.generate_private_key(ec.SECP384R1())
    client = FleetClient(httpx.AsyncClient(transport=_transport(status)), "https://x", key,
                         Stats())
    with pytest.raises(error):
        asyncio.run(client.call("pull-messages", PullMessagesRequest(),
                                PullMessagesResponse))


def test_retries_stop_at_the_deadline() -> None:
    """503 is retried with backoff, but never past the deadline."""
    from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse

    stats = Stats()
    key = ec.generate_private_key(ec.SECP384R1())
    client = FleetClient(httpx.AsyncClient(transport=_transport(503)), "https://x", key,
                         stats)
    import time

    with pytest.raises(TimeoutError):
        asyncio.run(client.call_retrying("pull-messages", PullMessagesRequest(),
                                         PullMessagesResponse, Deadline(time.monotonic() + 2)))
    assert stats.statuses["pull-messages 503"] >= 1


def _instruction(kind: str, content: RecordDict, node: int = 5) -> Message:
    msg = Message(content, dst_node_id=node, message_type=kind)
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def _device() -> VirtualDevice:
    key = ec.generate_private_key(ec.SECP384R1())
    return VirtualDevice(FleetClient(httpx.AsyncClient(), "https://x", key, Stats()),
                         Pace(examples=120), seed=3)


@pytest.mark.parametrize("compression", ["none", "float16", "int8"])
def test_a_train_reply_passes_fedfleets_intake(compression: str) -> None:
    """The reply a virtual device sends is one the server accepts, as a ClientApp's."""
    # Prepare
    sent = encode_weights(BASE, compression)  # as the server's WeightCodec sends them
    msgs = [_instruction("train", RecordDict({"arrays": ArrayRecord(sent), "config":
                                              ConfigRecord({"server-round": 2})}), node)
            for node in (5, 6)]
    # Execute
    replies = [_device()._train_reply(msg, compression) for msg in msgs]
    result = Intake(specs_of(BASE), compression).train(replies, BASE)
    # Assert
    assert result.rejected == [], result.rejected
    assert len(result.accepted) == 2
    assert result.reports[0].dropped == []
    assert result.reports[0].eval_score is not None
    assert 0 < result.reports[0].update_norm < 1


def test_final_model_reply_carries_the_digest_the_server_checks() -> None:
    """The server compares the digest of the weights it sent with the device's."""
    msg = _instruction(delivery.MESSAGE_TYPE, RecordDict({
        "arrays": ArrayRecord(BASE),
        delivery.INFO_KEY: ConfigRecord(delivery.pack_info(4, {"acc": 0.9}, "x"))}))
    reply = _device()._final_model_reply(msg)
    answer = reply.content.config_records[delivery.INFO_KEY]
    assert answer[delivery.WEIGHTS_DIGEST] == weights_digest(BASE)
    assert answer["round"] == 4
