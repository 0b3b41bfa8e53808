"""The reply intake against a device that lies in every field it sends."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server.run.intake import (
    DEADLINE_CODE,
    Intake,
    IntakeLimits,
    IntakeResult,
    cap_weights,
    clean_text,
    lower_median,
)
from fedfleet.shared.compression import encode_update
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import specs_of

BASE = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
SPECS = specs_of(BASE)
HONEST = {"num-examples": 100, "train_loss": 0.5, "train_accuracy": 0.8,
          "train_time_s": 1.5, "warm": 1.0}


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield


def _instruction(node: int, kind: str = "train") -> Message:
    msg = Message(RecordDict(), dst_node_id=node, message_type=kind)
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def _reply(node: int, arrays: Any = None, metrics: dict[str, Any] | None = None,
           kind: str = "train", **records: Any) -> Message:
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrays if isinstance(arrays, ArrayRecord) else ArrayRecord(arrays)
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    for name, record in records.items():
        content[name] = record
    return Message(content, reply_to=_instruction(node, kind))


def _weights(value: float = 1.0) -> list[np.ndarray]:
    return [np.full_like(b, value) for b in BASE]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_npy(shape: str, data: bytes = b"") -> bytes:
    """Return .npy bytes whose header announces ``shape`` (and carries ``data``)."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data


def _train(*replies: Message, compression: str = "none", **limits: Any) -> IntakeResult:
    return Intake(SPECS, compression, IntakeLimits(**limits)).train(list(replies), BASE)


def _reasons(result: IntakeResult) -> dict[str, str]:
    return {r.node_id: r.text for r in result.rejected}


def _notes(result: IntakeResult) -> dict[str, list[str]]:
    return {r.node_id: r.dropped for r in result.reports}


def test_an_honest_reply_is_rebuilt_with_only_what_fedfleet_uses() -> None:
    """Weights and the averaged metrics go on; every known metric is reported."""
    result = _train(_reply(1, _weights(2.0), HONEST), _reply(2, _weights(4.0), HONEST))
    assert result.rejected == [] and len(result.accepted) == 2
    msg = result.accepted[0]
    assert list(msg.content.array_records) == ["arrays"]
    assert list(msg.content.metric_records) == ["metrics"]
    assert dict(msg.content["metrics"]) == {"num-examples": 100.0}
    assert result.metrics == {"train_loss": 0.5, "train_accuracy": 0.8, "warm": 1.0}
    assert msg.metadata.src_node_id == 1
    report = result.reports[0]
    assert report.metrics["train_time_s"] == 1.5 and report.dropped == []
    assert report.weight == 100 and report.update_norm == pytest.approx(np.sqrt(15 * 4))
    assert result.payload_bytes == sum(len(_npy(w)) for w in _weights()) * 2
    arrays, _ = FedAvg().aggregate_train(1, result.accepted)
    assert arrays is not None
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((4, 3), 3.0))


def test_extra_records_are_dropped_and_named() -> None:
    """A second ArrayRecord or MetricRecord no longer reaches Flower (it ended runs)."""
    extra = _reply(1, _weights(), HONEST, extra=ArrayRecord(_weights(99.0)),
                   more=MetricRecord({"x": 1.0}), cfg=ConfigRecord({"a": "b"}))
    result = _train(extra, _reply(2, _weights(), HONEST))
    assert not result.rejected
    assert _notes(result)["1"] == ["dropped 1 extra ArrayRecord(s) ('extra')",
                                   "dropped 1 extra MetricRecord(s) ('more')",
                                   "dropped 1 config record(s)"]
    arrays, _ = FedAvg().aggregate_train(1, result.accepted)
    assert arrays is not None and float(arrays.to_numpy_ndarrays()[0].max()) == 1.0


def _array(dtype: str, shape: tuple[int, ...], stype: str, data: bytes) -> Array:
    return Array(dtype=dtype, shape=shape, stype=stype, data=data)


@pytest.mark.parametrize(("first", "reason"), [
    (_array("float32", (4, 3), "torch.raw", b"\0" * 48),
     "tensor 0 from node 1 has serialization 'torch.raw', expected 'numpy.ndarray'"),
    (_array("float64", (4, 3), "numpy.ndarray", _npy(np.zeros((4, 3)))),
     "tensor 0 from node 1 is float64, the model expects float32"),
    (_array("float32", (10**12,), "numpy.ndarray", b"x"),
     "weight tensor 0 from node 1 is (1000000000000,) float32, the model expects (4, 3)"),
    (_array("float32", (4, 3), "numpy.ndarray", _lying_npy("(1000000, 1000000)")),
     ".npy data announces shape (1000000, 1000000), expected (4, 3)"),
    (_array("float32", (4, 3), "numpy.ndarray", _lying_npy("(4, 3)", b"\0" * 8)),
     ".npy data holds 8 bytes, its shape needs 48"),
    (_array("float32", (4, 3), "numpy.ndarray", b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 40),
     ".npy header of 65535 bytes is too long or cut off"),
    (_array("float32", (4, 3), "numpy.ndarray", _npy(np.zeros((4, 3), np.float32)) + b"x"),
     ".npy data holds 49 bytes, its shape needs 48"),
    (_array("float32", (4, 3), "numpy.ndarray",
            _npy(np.zeros((4, 3), np.float32)).replace(b"'<f4'", b"'|O8'")),
     ".npy header is not a plain dtype/order/shape record"),
])
def test_arrays_are_checked_before_they_are_deserialized(first: Array, reason: str) -> None:
    """Wrong stype, dtype, shapes (declared or in the .npy header), bytes: rejected."""
    good = Array(np.zeros(3, np.float32))
    bad = _reply(1, ArrayRecord({"0": first, "1": good}), HONEST)
    result = _train(bad, _reply(2, _weights(), HONEST))
    assert reason in _reasons(result)["1"] and len(result.accepted) == 1


def test_a_huge_npy_header_shape_is_refused_without_allocating() -> None:
    """np.load would try to allocate 4 TB for this 128-byte header; the intake names it."""
    data = _lying_npy("(1000000, 1000000)")
    with pytest.raises(MemoryError):
        np.load(io.BytesIO(data + b"\0" * 64))  # what Flower's Array.numpy() would do
    huge = _array("float32", (4, 3), "numpy.ndarray", data)
    result = _train(_reply(1, ArrayRecord({"0": huge, "1": Array(np.zeros(3, np.float32))}),
                           HONEST))
    assert "announces shape (1000000, 1000000)" in _reasons(result)["1"]


def test_the_wrong_number_or_naming_of_tensors_is_refused() -> None:
    """Three tensors for a two-tensor model, or keys other than '0', '1'."""
    result = _train(_reply(1, [*_weights(), np.zeros(1, np.float32)], HONEST),
                    _reply(2, ArrayRecord({"b": Array(BASE[0]), "a": Array(BASE[1])}),
                           HONEST))
    reasons = _reasons(result)
    assert reasons["1"] == ("rejected: weights from node 1 have 3 tensors, expected 2 for "
                            "this model")
    assert reasons["2"] == ("rejected: weights from node 2 are keyed 'b', 'a'..., "
                            "expected '0'..'1'")


def test_a_float16_bomb_is_refused_before_inflating() -> None:
    """A lying header, or a payload inflating beyond the model's size: refused unread."""
    honest = encode_update(_weights(0.5), BASE, "float16")
    liar_header = np.array([1, 1, 2**30], np.int64)
    same_size_liar = np.array([2, 2, 4, 3, 1, 2**30], np.int64)
    bomb = np.frombuffer(zlib.compress(bytes(10**7)), np.uint8)
    small_bomb = np.frombuffer(zlib.compress(bytes(10**6)), np.uint8)  # ~1 KB -> 1 MB
    assert len(small_bomb) < 2000
    result = _train(_reply(1, [liar_header, honest[1]], HONEST),
                    _reply(2, [honest[0], bomb], HONEST),
                    _reply(3, [honest[0], small_bomb[:90]], HONEST),
                    _reply(6, [honest[0], np.frombuffer(zlib.compress(bytes(500)),
                                                        np.uint8)], HONEST),
                    _reply(4, honest, HONEST), _reply(5, [same_size_liar, honest[1]], HONEST),
                    compression="float16")
    reasons = _reasons(result)
    assert "tensor 0 from node 1 is (3,) int64, the model expects (6,)" in reasons["1"]
    assert "the float16 header from node 5 does not describe this model" in reasons["5"]
    assert "expected one dimension of at most" in reasons["2"]  # longer than any honest one
    assert "does not inflate" in reasons["3"] or "is not complete" in reasons["3"]
    assert "is not complete: its header needs 30 bytes" in reasons["6"]
    assert [m.metadata.src_node_id for m in result.accepted] == [4]
    np.testing.assert_allclose(result.accepted[0].content["arrays"].to_numpy_ndarrays()[0],
                               np.full((4, 3), 0.5))


def test_int8_parts_are_checked() -> None:
    """A NaN or negative scale is refused."""
    honest = encode_update(_weights(0.5), BASE, "int8")
    nan_scale = [honest[0], np.array([np.nan], np.float32), *honest[2:]]
    neg_scale = [honest[0], np.array([-1.0], np.float32), *honest[2:]]
    result = _train(_reply(1, nan_scale, HONEST), _reply(2, neg_scale, HONEST),
                    _reply(3, honest, HONEST), compression="int8")
    assert "no finite non-negative scale" in _reasons(result)["1"]
    assert "no finite non-negative scale" in _reasons(result)["2"]
    assert len(result.accepted) == 1


def test_metrics_are_filtered_and_every_drop_is_named() -> None:
    """Junk keys, server field names, NaN and out-of-range values go; the reply stays."""
    junk = {f"junk{i}": 1.0 for i in range(4995)}
    lies = {**HONEST, **junk, "node_id": 7.0, "update_norm": 0.0, "weight": 1e9,
            "train_loss": float("nan"), "train_accuracy": 3.0, "warm": [1.0, 2.0]}
    result = _train(_reply(1, _weights(), lies), _reply(2, _weights(), HONEST))
    assert not result.rejected
    notes = _notes(result)["1"]
    assert "dropped train_loss: nan is not a finite number" in notes
    assert "dropped train_accuracy: 3 is outside [0, 1]" in notes
    assert "dropped warm: [1.0, 2.0] is not a finite number" in notes
    assert "dropped 4998 unknown metric keys ('junk0', 'junk1', 'junk2', ...)" in notes
    report = result.reports[0]
    assert set(report.metrics) == {"num-examples", "train_time_s"}
    assert report.weight == 100.0  # the server's own fields
    for msg in result.accepted:  # the weight only; the round's metrics come from the
        assert set(msg.content["metrics"]) == {"num-examples"}  # replies that have them
    assert result.metrics == {"train_loss": 0.5, "train_accuracy": 0.8, "warm": 1.0}


def test_the_sgd_momentum_a_device_trained_with_is_kept() -> None:
    """sgd_momentum (only SGD devices send it) reaches the record; out of range, a note."""
    # Execute
    result = _train(_reply(1, _weights(), {**HONEST, "sgd_momentum": 0.9}),
                    _reply(2, _weights(), {**HONEST, "sgd_momentum": 1.5}))
    # Assert
    assert not result.rejected
    assert result.reports[0].metrics["sgd_momentum"] == 0.9
    assert "sgd_momentum" not in result.reports[1].metrics
    assert "dropped sgd_momentum: 1.5 is outside [0, 1]" in _notes(result)["2"]
    assert "sgd_momentum" not in result.metrics  # per device, not averaged


def test_the_global_eval_set_is_all_or_nothing() -> None:
    """A partial or invalid global_eval_* set is dropped with its reason."""
    partial = {**HONEST, "global_eval_loss": 0.4}
    bad_acc = {**HONEST, "global_eval_loss": 0.4, "global_eval_accuracy": 1.5,
               "global_eval_examples": 20}
    zero = {**HONEST, "global_eval_loss": 0.4, "global_eval_accuracy": 0.5,
            "global_eval_examples": 0}
    good = {**HONEST, "global_eval_loss": 0.4, "global_eval_accuracy": 0.5,
            "global_eval_examples": 20}
    result = _train(*(_reply(n, _weights(), m) for n, m in
                      ((1, partial), (2, bad_acc), (3, zero), (4, good))))
    notes = _notes(result)
    assert notes["1"] == ["dropped global_eval_*: incomplete (has global_eval_loss; lacks "
                          "global_eval_accuracy, global_eval_examples)"]
    assert notes["2"] == ["dropped global_eval_*: global_eval_accuracy 1.5 is not in [0, 1]"]
    assert "global_eval_examples 0 is not a whole number" in notes["3"][0]
    scores = {r.node_id: r.eval_score for r in result.reports}
    assert scores["1"] is None and scores["4"] is not None and scores["4"].examples == 20


@pytest.mark.parametrize(("claim", "reason"), [
    (10**9, "num-examples 1000000000 is outside 1..100000 (raise --max-examples if real)"),
    (0, "num-examples 0 is outside 1..100000"),
    (2.5, "num-examples 2.5 is not a whole number"),
    (float("inf"), "num-examples inf is not a whole number"),
    ([1, 2], "num-examples [1, 2] is not a whole number"),
])
def test_an_impossible_example_count_is_rejected(claim: Any, reason: str) -> None:
    result = _train(_reply(1, _weights(), {**HONEST, "num-examples": claim}))
    assert reason in _reasons(result)["1"]


def test_a_big_claim_counts_at_most_k_times_the_median() -> None:
    """One device claiming 50,000 examples among devices with ~100 weighs 3 x 100."""
    result = _train(_reply(1, _weights(1.0), {**HONEST, "num-examples": 100}),
                    _reply(2, _weights(1.0), {**HONEST, "num-examples": 120}),
                    _reply(3, _weights(7.0), {**HONEST, "num-examples": 50_000}),
                    max_update_norm_ratio=0)
    weights = {r.node_id: r.weight for r in result.reports}
    assert weights == {"1": 100, "2": 120, "3": 360}
    assert "num-examples 50000 counted as 360 (--max-examples-ratio)" in _notes(result)["3"]
    arrays, _ = FedAvg().aggregate_train(1, result.accepted)
    assert arrays is not None  # (100 + 120 + 7 * 360) / 580
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], np.full((4, 3), 2740 / 580),
                               rtol=1e-5)


def test_weight_cap_rule() -> None:
    assert lower_median([5.0, 1.0]) == 1.0 and lower_median([3.0, 1.0, 2.0]) == 2.0
    assert cap_weights({"a": 10.0, "b": 1000.0}, 3) == {"a": 10.0, "b": 30.0}
    assert cap_weights({"a": 10.0, "b": 1000.0}, 0) == {"a": 10.0, "b": 1000.0}


def test_device_errors_are_cleaned_and_cut() -> None:
    """A device's exception text: one line, no terminal escapes, at most 300 characters."""
    text = "<class 'evil.Boom'>:<'\x1b[2J\x1b]0;owned\x07line1\nline2\u202e" + "A" * 5000 + "'>"
    result = _train(Message(Error(2, text), reply_to=_instruction(5)))
    (rejection,) = result.rejected
    assert rejection.kind == "error"
    assert rejection.reason.startswith("Boom:  [2J ]0;owned line1 line2 AAA")
    assert rejection.reason.endswith(" more characters)")
    assert len(rejection.reason) < 340 and "\x1b" not in rejection.reason


def test_a_deadline_reply_is_its_own_kind() -> None:
    result = _train(Message(Error(DEADLINE_CODE, "no reply by the deadline (x)"),
                            reply_to=_instruction(6)))
    assert [(r.node_id, r.kind, r.text) for r in result.rejected] == [
        ("6", "deadline", "no reply by the deadline (x)")]


class Exploding:
    """A message whose content blows up when read."""

    def __init__(self, node: int, error: BaseException) -> None:
        self.metadata = _reply(node).metadata
        self.error = error

    def has_error(self) -> bool:
        return False

    @property
    def content(self) -> RecordDict:
        raise self.error


def test_any_exception_rejects_only_that_reply() -> None:
    """MemoryError, KeyError, RecursionError: one reason each; the others go on."""
    result = _train(Exploding(1, MemoryError()),  # type: ignore[arg-type]
                    Exploding(2, KeyError("global_eval_accuracy")),  # type: ignore[arg-type]
                    Exploding(3, RecursionError("deep")),  # type: ignore[arg-type]
                    _reply(4, _weights(), HONEST))
    assert _reasons(result) == {"1": "rejected: MemoryError",
                                "2": "rejected: KeyError: 'global_eval_accuracy'",
                                "3": "rejected: RecursionError: deep"}
    assert len(result.accepted) == 1


def test_evaluate_replies_are_rebuilt_too() -> None:
    """Garbage evaluate replies are rejected or trimmed; the rest aggregate."""
    honest = {"num-examples": 40, "eval_loss": 0.3, "eval_accuracy": 0.9,
              "eval_time_s": 0.1}
    intake = Intake(SPECS)
    replies = [
        _reply(1, None, honest, kind="evaluate"),
        _reply(2, None, {**honest, "eval_loss": float("nan")}, kind="evaluate"),
        _reply(3, None, {"eval_loss": 0.1, "eval_accuracy": 0.1}, kind="evaluate"),
        _reply(4, _weights(), {**honest, "junk": 1.0, "eval_accuracy": 0.5},
               kind="evaluate"),
        _reply(5, None, None, kind="evaluate"),
    ]
    result = intake.evaluate(replies)
    reasons = _reasons(result)
    assert reasons["2"] == "rejected: the reply has no valid eval_loss"
    assert reasons["3"] == "rejected: num-examples None is not a whole number"
    assert reasons["5"] == ("rejected: the reply carries no metrics (no MetricRecord "
                            "'metrics')")
    assert _notes(result)["4"] == ["dropped 1 ArrayRecord(s): an evaluate reply carries none",
                                   "dropped 1 unknown metric key ('junk')"]
    assert FedAvg().aggregate_evaluate(1, result.accepted) is not None
    assert result.metrics["eval_accuracy"] == pytest.approx(0.7)
    assert set(result.metrics) == {"eval_loss", "eval_accuracy"}


def test_clean_text() -> None:
    assert clean_text("a\tb\r\nc\u2028d\x00") == "a b  c d "
    assert clean_text("x" * 10, limit=4) == "xxxx... (6 more characters)"


def test_a_second_reply_from_one_node_is_refused() -> None:
    result = _train(_reply(1, _weights(1.0), HONEST), _reply(1, _weights(9.0), HONEST))
    assert [m.metadata.src_node_id for m in result.accepted] == [1]
    assert _reasons(result) == {"1": "rejected: a second reply from the same node in one "
                                     "round"}
    np.testing.assert_allclose(result.accepted[0].content["arrays"].to_numpy_ndarrays()[0],
                               np.ones((4, 3)))


def test_describe_error() -> None:
    """Flower's error text is shortened to 'Type: message'."""
    from fedfleet.server.run.intake import describe_error

    assert describe_error("<class 'a.b.DataError'>:<'bad\nthing'>") == \
        "DataError: bad\nthing"
    assert describe_error("plain") == "plain"
    assert describe_error(None) == "unknown error"


def test_the_limits_come_from_the_run_settings() -> None:
    settings = RunSettings(max_examples=7, max_examples_ratio=2.0, max_update_norm_ratio=0)
    assert IntakeLimits.from_settings(settings) == IntakeLimits(7, 2.0, 0)
    assert IntakeLimits() == IntakeLimits.from_settings(RunSettings())
