"""Property tests of the reply intake (Hypothesis): arbitrary replies never escape it.

Whatever records a reply carries (any number of ArrayRecords and MetricRecords under
any names, Arrays with any stype, dtype, declared shape and bytes, metrics with any
names and values, error replies with any text), the intake accepts or rejects each
reply, never raises, and everything it accepts is exactly what Flower's FedAvg can
aggregate. Honest replies always come through unchanged.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedfleet.server.run.intake import (
    AGGREGATED_EVALUATE,
    AGGREGATED_TRAIN,
    Intake,
    IntakeLimits,
    IntakeResult,
)
from fedfleet.shared.compression import encode_update
from fedfleet.shared.weights import specs_of

FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BASE = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
SPECS = specs_of(BASE)
LIMITS = IntakeLimits(max_examples=1000, max_update_norm_ratio=0)


def _identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_npy(shape: tuple[int, ...], descr: str) -> bytes:
    text = (f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
            .ljust(117) + "\n")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


shapes = st.one_of(st.sampled_from([(4, 3), (3,), (), (6,), (10**12,)]),
                   hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
honest_arrays = st.sampled_from([BASE[0], BASE[1], np.ones(6, np.int64),
                                 np.full((4, 3), np.nan, np.float32),
                                 np.ones(3, np.float64), np.ones(12, np.uint8)])
array_data = st.one_of(
    honest_arrays.map(_npy),
    st.tuples(shapes, st.sampled_from(["<f4", "|u1", "<i8", "|O"])).map(
        lambda a: _lying_npy(*a)),
    st.binary(max_size=200))


@st.composite
def any_array(draw: st.DrawFn) -> Array:
    return Array(dtype=draw(st.sampled_from(["float32", "float64", "int8", "int64",
                                             "uint8", "object", ""])),
                 shape=draw(shapes),
                 stype=draw(st.sampled_from(["numpy.ndarray", "numpy.ndarray",
                                             "torch.raw", ""])),
                 data=draw(array_data))


array_records = st.dictionaries(st.sampled_from(["0", "1", "2", "x"]), any_array(),
                                max_size=4).map(lambda d: ArrayRecord(d))
metric_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=3))
metric_names = st.one_of(
    st.sampled_from(["num-examples", "train_loss", "train_accuracy", "warm", "eval_loss",
                     "eval_accuracy", "global_eval_loss", "global_eval_accuracy",
                     "global_eval_examples", "node_id", "update_norm", "queue_s"]),
    st.text(max_size=20))
metric_records = st.dictionaries(metric_names, metric_values, max_size=12).map(
    lambda d: MetricRecord(d))


@st.composite
def hostile_reply(draw: st.DrawFn, node: int, kind: str) -> Message:
    _identity()
    instruction = Message(RecordDict(), dst_node_id=node, message_type=kind)
    if draw(st.integers(0, 9)) == 0:
        return Message(Error(draw(st.integers(0, 10**4)), draw(st.text(max_size=500))),
                       reply_to=instruction)
    content = RecordDict()
    for name in draw(st.lists(st.sampled_from(["arrays", "extra"]), max_size=2,
                              unique=True)):
        content[name] = draw(array_records)
    for name in draw(st.lists(st.sampled_from(["metrics", "more"]), max_size=2,
                              unique=True)):
        content[name] = draw(metric_records)
    if draw(st.booleans()):
        content["config"] = ConfigRecord({"a": "b"})
    return Message(content, reply_to=instruction)


@st.composite
def honest_reply(draw: st.DrawFn, node: int, method: str) -> tuple[Message, list[Any]]:
    _identity()
    instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
    weights = [draw(hnp.arrays(np.float32, b.shape, elements=st.floats(-5, 5, width=32)))
               for b in BASE]
    metrics = {"num-examples": draw(st.integers(1, 1000)),
               "train_loss": draw(st.floats(0, 10)), "train_accuracy": draw(st.floats(0, 1)),
               "train_time_s": draw(st.floats(0, 100)), "warm": 1.0}
    content = RecordDict({"arrays": ArrayRecord(encode_update(weights, BASE, method)),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=instruction), weights


def _check_accepted(result: IntakeResult, aggregated: tuple[str, ...], train: bool
                    ) -> None:
    assert set(result.metrics) <= set(aggregated)
    assert all(math.isfinite(v) for v in result.metrics.values())
    accepted = result.accepted
    for msg in accepted:
        assert list(msg.content.metric_records) == ["metrics"]
        assert not msg.content.config_records
        metrics = msg.content["metrics"]
        assert set(metrics) == {"num-examples"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert 1 <= metrics["num-examples"] <= LIMITS.max_examples
        if train:
            assert list(msg.content.array_records) == ["arrays"]
            weights = msg.content["arrays"].to_numpy_ndarrays()
            assert specs_of(weights) == SPECS
            assert all(np.all(np.isfinite(w)) for w in weights)
        else:
            assert not msg.content.array_records


@FAST
@given(st.data(), st.sampled_from(["none", "float16", "int8"]))
def test_no_train_reply_escapes_the_intake(data: st.DataObject, method: str) -> None:
    replies = [data.draw(hostile_reply(node, "train")) for node in range(2, 6)]
    honest, _ = data.draw(honest_reply(9, method))
    result = Intake(SPECS, method, LIMITS).train([*replies, honest], BASE)
    assert len(result.accepted) + len(result.rejected) == 5
    assert 9 in [m.metadata.src_node_id for m in result.accepted]
    assert all(len(r.reason) <= 300 + 40 and r.reason.isprintable() for r in result.rejected)
    _check_accepted(result, AGGREGATED_TRAIN, train=True)
    arrays, _ = FedAvg().aggregate_train(1, result.accepted)
    assert arrays is not None


@FAST
@given(st.data())
def test_no_evaluate_reply_escapes_the_intake(data: st.DataObject) -> None:
    replies = [data.draw(hostile_reply(node, "evaluate")) for node in range(2, 7)]
    result = Intake(SPECS, "none", LIMITS).evaluate(replies)
    assert len(result.accepted) + len(result.rejected) == 5
    _check_accepted(result, AGGREGATED_EVALUATE, train=False)
    if result.accepted:
        FedAvg().aggregate_evaluate(1, result.accepted)


@FAST
@given(st.data(), st.sampled_from(["none", "float16", "int8"]))
def test_honest_replies_come_through_unchanged(data: st.DataObject, method: str) -> None:
    pairs = [data.draw(honest_reply(node, method)) for node in (1, 2, 3)]
    result = Intake(SPECS, method, IntakeLimits(max_examples=1000, max_examples_ratio=0,
                                                max_update_norm_ratio=0)).train(
        [m for m, _ in pairs], BASE)
    assert not result.rejected and all(not r.dropped for r in result.reports)
    tolerance = {"none": 0.0, "float16": 0.01, "int8": 5 / 127}[method]
    for msg, (_, sent) in zip(result.accepted, pairs, strict=True):
        for got, want in zip(msg.content["arrays"].to_numpy_ndarrays(), sent, strict=True):
            np.testing.assert_allclose(got, want, atol=tolerance)
