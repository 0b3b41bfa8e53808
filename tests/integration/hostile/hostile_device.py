"""A device that lies in every field it sends, one kind of lie per round (tests only).

The device is real (``fedfleet join``: SuperNode, warm trainer, ClientApp); its
ClientApp first does the honest work, then replaces the reply with one of the lies in
:data:`TRAIN` and :data:`EVALUATE`, picked by the round. Every reply it sends is
logged as a JSON line to ``$FEDFLEET_HOSTILE_LOG`` (node, round, phase, lie) so the
test can match the server's record against what was sent.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp


def _lying_npy(descr: str, shape: tuple[int, ...]) -> bytes:
    """Return a .npy header announcing ``shape`` and no data (np.load would allocate it)."""
    text = (f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
            .ljust(117) + "\n")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def _with(reply: Message, **records: object) -> RecordDict:
    content = RecordDict(dict(reply.content))
    for name, record in records.items():
        content[name] = record  # type: ignore[assignment]
    return content


def second_arrayrecord(reply: Message) -> RecordDict:
    return _with(reply, extra=ArrayRecord([np.full(10, 1e9, np.float32)]))


def foreign_stype(reply: Message) -> RecordDict:
    arrays = dict(reply.content["arrays"])
    first = arrays["0"]
    arrays["0"] = Array(dtype=first.dtype, shape=first.shape, stype="torch.raw",
                        data=first.data)
    return _with(reply, arrays=ArrayRecord(arrays))


def huge_npy_header(reply: Message) -> RecordDict:
    arrays = dict(reply.content["arrays"])
    first = arrays["0"]
    arrays["0"] = Array(dtype=first.dtype, shape=first.shape, stype=first.stype,
                        data=_lying_npy("<i8", (1_000_000, 1_000_000)))
    return _with(reply, arrays=ArrayRecord(arrays))


def lying_metrics(reply: Message) -> RecordDict:
    metrics = dict(reply.content["metrics"])
    metrics.update({f"junk{i}": float(i) for i in range(5000)})
    metrics.update({"train_loss": float("nan"), "node_id": 1.0, "update_norm": 0.0,
                    "weight": 1e9, "global_eval_loss": 0.01})
    return _with(reply, metrics=MetricRecord(metrics))  # type: ignore[arg-type]


def float16_bomb(reply: Message) -> RecordDict:
    """Return a payload under the size bound that inflates to 500x the model."""
    arrays = reply.content["arrays"].to_numpy_ndarrays()
    dims = [int(d) for d in arrays[0]]
    count, pos = 0, 1
    for _ in range(dims[0]):
        count += math.prod(dims[pos + 1:pos + 1 + dims[pos]])
        pos += 1 + dims[pos]
    bomb = np.frombuffer(zlib.compress(bytes(500 * 2 * count), 9), np.uint8)
    return _with(reply, arrays=ArrayRecord([arrays[0], bomb]))


def claims(count: float) -> Callable[[Message], RecordDict]:
    def lie(reply: Message) -> RecordDict:
        metrics = dict(reply.content["metrics"])
        metrics["num-examples"] = count
        return _with(reply, metrics=MetricRecord(metrics))  # type: ignore[arg-type]
    lie.__name__ = f"claims_{count:g}_examples"
    return lie


def nan_eval_loss(reply: Message) -> RecordDict:
    metrics = dict(reply.content["metrics"])
    metrics["eval_loss"] = float("nan")
    return _with(reply, metrics=MetricRecord(metrics))  # type: ignore[arg-type]


def eval_with_arrays_and_junk(reply: Message) -> RecordDict:
    metrics = dict(reply.content["metrics"])
    metrics.update({f"junk{i}": 1.0 for i in range(5000)})
    metrics["node_id"] = 3.0
    return _with(reply, metrics=MetricRecord(metrics),  # type: ignore[arg-type]
                 arrays=ArrayRecord([np.ones(4, np.float32)]))


def no_num_examples(reply: Message) -> RecordDict:
    metrics = {k: v for k, v in reply.content["metrics"].items() if k != "num-examples"}
    return _with(reply, metrics=MetricRecord(metrics))  # type: ignore[arg-type]


def extra_records(reply: Message) -> RecordDict:
    return _with(reply, more=MetricRecord({"eval_loss": 0.0, "num-examples": 10**6}),
                 config=ConfigRecord({"role": "server"}))


ESCAPES = "\x1b[2J\x1b]0;pwned\x07line one\nline two\u202e"


def error_with_escapes(reply: Message) -> RecordDict:
    raise NotImplementedError  # handled in lie(): this lie is an error reply


TRAIN: dict[int, Callable[[Message], RecordDict]] = {
    1: second_arrayrecord, 2: foreign_stype, 3: huge_npy_header, 4: lying_metrics,
    5: float16_bomb, 6: claims(10_000_000), 7: claims(90_000)}
EVALUATE: dict[int, Callable[[Message], RecordDict]] = {
    1: nan_eval_loss, 2: eval_with_arrays_and_junk, 3: no_num_examples,
    4: claims(1e9), 5: extra_records, 6: error_with_escapes}


def lie(message: Message, context: Context, reply: Message) -> Message:
    """Return the lie for this round and phase instead of ``reply`` (logged)."""
    phase = message.metadata.message_type.split(".")[0]
    server_round = int(message.content["config"]["server-round"])  # type: ignore[arg-type]
    table = TRAIN if phase == "train" else EVALUATE
    attack = table.get(server_round)
    with open(os.environ["FEDFLEET_HOSTILE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"node": str(context.node_id), "round": server_round,
                              "phase": phase, "lie": attack.__name__ if attack else None,
                              "honest_error": reply.has_error()}) + "\n")
    if attack is None or reply.has_error():
        return reply
    if attack is error_with_escapes:
        text = f"<class 'evil.Evil'>:<'{ESCAPES}{'A' * 10_000}'>"
        return Message(Error(code=2, reason=text), reply_to=message)
    return Message(attack(reply), reply_to=message)


def install() -> None:
    """Make every ClientApp in this process reply with :func:`lie`."""
    honest = ClientApp.__call__

    def call(self: ClientApp, message: Message, context: Context) -> Message:
        return lie(message, context, honest(self, message, context))

    ClientApp.__call__ = call  # type: ignore[method-assign]
