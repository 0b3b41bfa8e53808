"""FedfleetStrategy and its RunRecorder driven with a fake grid and real Flower messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from fakegrid import NodeGrid
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server.results.run_files import RunFiles
from fedfleet.server.run.codec import WeightCodec
from fedfleet.server.run.intake import Intake, IntakeLimits
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.server.run.round_policy import RoundPolicy
from fedfleet.server.run.strategies import make_strategy
from fedfleet.server.run.wrapper import FedfleetStrategy
from fedfleet.shared.compression import decode_weights, encode_update
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.models import build_model
from fedfleet.shared.runrecord import CentralScores, read_record, round_line
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import specs_of

pytestmark = pytest.mark.usefixtures("task_identity")


def _reply(to: Message, node: int, arrays: list[np.ndarray] | None,
           metrics: dict[str, float]) -> Message:
    TaskIdentity.node_id = node
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = ArrayRecord(arrays)
    return Message(content=content, reply_to=to)


def _error(to: Message, node: int, reason: str) -> Message:
    TaskIdentity.node_id = node
    return Message(Error(code=3, reason=reason), reply_to=to)


def _setup(tmp_path: Path, strategy: str = "fedavg", compression: str = "none",
           num_rounds: int = 1, min_replies: int = 1
           ) -> tuple[FedfleetStrategy, RunRecorder, list[np.ndarray]]:
    settings = RunSettings(strategy=strategy, min_clients=2, model="mlp",
                           input_shape="4", num_classes=2, compression=compression,
                           client_wait_timeout=5, num_rounds=num_rounds,
                           min_replies=min_replies)
    model = build_model("mlp", (4,), 2)
    weights = model.get_weights()
    specs = specs_of(weights)
    recorder = RunRecorder(RunFiles(tmp_path), {"run_id": 1, "num_rounds": num_rounds})
    wrapped = FedfleetStrategy(
        make_strategy(settings),
        intake=Intake(specs, compression, IntakeLimits.from_settings(settings)),
        codec=WeightCodec(specs, compression), recorder=recorder,
        policy=RoundPolicy.from_settings(settings), model=model)
    return wrapped, recorder, weights


def _end_round(strategy: FedfleetStrategy, server_round: int, arrays: ArrayRecord,
               central: CentralScores | None = None) -> None:
    """Do what Flower does after a round: call the evaluate_fn the wrapper gave it."""
    strategy.round_end(lambda _: central)(server_round, arrays)


def test_round_with_a_bad_reply_aggregates_the_good_ones(tmp_path: Path) -> None:
    """Wrong shapes and client errors are recorded and left out; the rest averages."""
    strategy, recorder, weights = _setup(tmp_path)
    grid = NodeGrid([11, 12, 13, 14])
    msgs = sorted(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    assert [m.metadata.dst_node_id for m in msgs] == [11, 12, 13, 14]
    ones = [np.ones_like(w) for w in weights]
    threes = [np.full_like(w, 3.0) for w in weights]
    wrong = [np.ones((5, 5), dtype=np.float32)] + weights[1:]
    replies = [
        _reply(msgs[0], 11, ones, {"num-examples": 10, "train_loss": 1.0,
                                   "train_time_s": 0.5}),
        _reply(msgs[1], 12, threes, {"num-examples": 10, "train_loss": 3.0,
                                     "train_time_s": 0.7}),
        _reply(msgs[2], 13, wrong, {"num-examples": 10, "train_loss": 0.0}),
        _error(msgs[3], 14, "<class 'fedfleet.shared.errors.VersionMismatchError'>:"
                            "<'server runs fedfleet 0.2.0, this client 0.1.0'>"),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    for got in arrays.to_numpy_ndarrays():
        np.testing.assert_almost_equal(got, np.full_like(got, 2.0))
    assert metrics["train_loss"] == pytest.approx(2.0)
    row = recorder.row
    assert row["train_replies"] == 2 and row["train_failures"] == 2
    errors = {e["node_id"]: e["error"] for e in row["errors"]}
    assert "tensor 0" in errors["13"]
    assert errors["14"].startswith("VersionMismatchError: server runs fedfleet 0.2.0")
    _end_round(strategy, 1, arrays, {"loss": 0.5, "accuracy": 0.9})
    saved = read_record(tmp_path)
    assert saved is not None
    assert saved["rounds"][0]["central_accuracy"] == 0.9
    assert saved["rounds"][0]["max_client_train_s"] == 0.7
    assert (tmp_path / "checkpoints" / "round-001.keras").exists()
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("round,wall_s") and csv_lines[1].startswith("1,")


def test_a_round_where_nobody_could_train_stops_the_run(tmp_path: Path) -> None:
    """If every reply failed, the run ends with the clients' reasons."""
    strategy, recorder, weights = _setup(tmp_path)
    grid = NodeGrid([21, 22])
    msgs = list(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid))
    replies = [_error(m, m.metadata.dst_node_id,
                      "<class 'fedfleet.shared.errors.DataError'>:<'/data: empty'>")
               for m in msgs]
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert list(strategy.configure_evaluate(1, ArrayRecord(weights), ConfigRecord(),
                                            grid)) == []
    with pytest.raises(FedfleetError, match=r"no client could train in round 1: 2 devices "
                       r"\(node 2[12], node 2[12]\): DataError: /data: empty"):
        _end_round(strategy, 1, ArrayRecord(weights))


def test_recorder_writes_status(tmp_path: Path) -> None:
    """finish() records status and error for the CLI to read."""
    _, recorder, _ = _setup(tmp_path)
    recorder.finish("failed", "boom")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == "boom"


def test_int8_updates_are_decoded_before_aggregation(tmp_path: Path) -> None:
    """Compressed runs send packed float16 down and rebuild float32 weights from int8."""
    strategy, recorder, weights = _setup(tmp_path, compression="int8")
    grid = NodeGrid([1, 2])
    msgs = list(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid))
    sent = decode_weights(msgs[0].content["arrays"].to_numpy_ndarrays(), "int8")
    for got, want in zip(sent, weights, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
    plus = [w + 0.5 for w in weights]
    replies = [_reply(m, m.metadata.dst_node_id,
                      encode_update(plus, weights, "int8"), {"num-examples": 5})
               for m in msgs]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    for got, want in zip(arrays.to_numpy_ndarrays(), plus, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=0.01)
    assert recorder.row["payload_bytes_up"] < recorder.row["payload_bytes_down"]


def test_evaluation_in_train_replies_lands_on_the_previous_round(tmp_path: Path) -> None:
    """Scores of the received model are filed under the round that produced it."""
    strategy, recorder, weights = _setup(tmp_path, num_rounds=3)
    grid = NodeGrid([1, 2])
    arrays = ArrayRecord(weights)
    for rnd, scores in ((1, (0.1, 0.2)), (2, (0.6, 0.9))):
        msgs = sorted(strategy.configure_train(rnd, arrays, ConfigRecord(), grid),
                      key=lambda m: m.metadata.dst_node_id)
        replies = [_reply(m, m.metadata.dst_node_id, weights,
                          {"num-examples": 10, "global_eval_loss": 1.0,
                           "global_eval_accuracy": acc, "global_eval_examples": n})
                   for m, acc, n in zip(msgs, scores, (10, 30), strict=True)]
        strategy.aggregate_train(rnd, replies)
        assert list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid)) == []
        _end_round(strategy, rnd, arrays)
    first = recorder.record["rounds"][0]
    assert first["eval_replies"] == 2
    assert first["eval_accuracy"] == pytest.approx((0.6 * 10 + 0.9 * 30) / 40)
    assert "eval_accuracy" not in recorder.record["rounds"][1]  # measured in round 3
    final = list(strategy.configure_evaluate(3, arrays, ConfigRecord(), grid))
    assert len(final) == 2  # the last model is evaluated by its own message


def test_poisoned_and_broken_updates_are_rejected_with_reasons(tmp_path: Path) -> None:
    """NaN, a x1000 update and a bogus example count are left out; the model stays sane."""
    strategy, recorder, weights = _setup(tmp_path)
    grid = NodeGrid([31, 32, 33, 34, 35, 36])
    msgs = sorted(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    rng = np.random.default_rng(0)
    honest = [[w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in weights]
              for _ in range(3)]
    nan = [w.copy() for w in weights]
    nan[0].flat[0] = np.nan
    scaled = [w + 1000 * (h - w) for w, h in zip(weights, honest[0], strict=True)]
    replies = [_reply(msgs[i], 31 + i, honest[i], {"num-examples": 100}) for i in range(3)]
    replies += [_reply(msgs[3], 34, nan, {"num-examples": 100}),
                _reply(msgs[4], 35, scaled, {"num-examples": 100}),
                _reply(msgs[5], 36, honest[1], {"num-examples": 0})]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    mean = [np.mean([h[i] for h in honest], axis=0) for i in range(len(weights))]
    for got, want in zip(arrays.to_numpy_ndarrays(), mean, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    row = recorder.row
    assert row["train_replies"] == 3 and row["rejected_replies"] == 3
    errors = {e["node_id"]: e["error"] for e in row["errors"]}
    assert errors["34"] == "rejected: 1 non-finite value(s) (NaN/inf) in weight 0"
    assert "update norm" in errors["35"] and "over 10x the round's median" in errors["35"]
    assert errors["36"].startswith("rejected: num-examples 0 is outside")
    _end_round(strategy, 1, arrays)
    saved = read_record(tmp_path)
    assert saved is not None and saved["rounds"][0]["rejected_replies"] == 3
    assert "3 rejected" in round_line(saved["rounds"][0])


def test_server_optimizers_hand_back_the_models_dtypes(tmp_path: Path) -> None:
    """FedAdam computes in float64; the next round's model must be float32 again."""
    strategy, _, weights = _setup(tmp_path, strategy="fedadam")
    grid = NodeGrid([41, 42])
    msgs = list(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid))
    replies = [_reply(m, m.metadata.dst_node_id, [w + 0.1 for w in weights],
                      {"num-examples": 10}) for m in msgs]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert [a.dtype for a in arrays.to_numpy_ndarrays()] == [w.dtype for w in weights]


def test_too_few_usable_replies_end_the_run_with_reasons(tmp_path: Path) -> None:
    """With --min-replies 2 and one usable reply, nothing is aggregated; the reason says so."""
    strategy, recorder, weights = _setup(tmp_path, min_replies=2)
    grid = NodeGrid([51, 52])
    msgs = sorted(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    replies = [_reply(msgs[0], 51, weights, {"num-examples": 10}),
               _error(msgs[1], 52, "<class 'TimeoutError'>:<'no reply in time'>")]
    assert strategy.aggregate_train(1, replies) == (None, None)
    with pytest.raises(FedfleetError, match="round 1 got 1 usable replies, fewer than "
                       "--min-replies 2: node 52: TimeoutError: no reply in time"):
        _end_round(strategy, 1, ArrayRecord(weights))


def test_replies_with_different_metric_keys_still_aggregate(tmp_path: Path) -> None:
    """One client sends an extra metric: the round aggregates on the shared keys."""
    strategy, recorder, weights = _setup(tmp_path)
    grid = NodeGrid([61, 62])
    msgs = sorted(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    replies = [_reply(msgs[0], 61, weights, {"num-examples": 10, "train_loss": 1.0,
                                             "queue_s": 0.2}),
               _reply(msgs[1], 62, weights, {"num-examples": 30, "train_loss": 2.0})]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert metrics["train_loss"] == pytest.approx(1.75)
    assert recorder.clients["61"]["device"]["queue_s"] == 0.2


def test_the_strategy_sees_only_messages_the_intake_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile replies reach FedAvg's own aggregate_train only as rebuilt messages."""
    from flwr.serverapp.strategy import FedAvg

    seen: list[Message] = []
    real = FedAvg.aggregate_train

    def spy(self: FedAvg, server_round: int, replies: Iterable[Message]
            ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        seen.extend(replies)
        return real(self, server_round, seen)

    monkeypatch.setattr(FedAvg, "aggregate_train", spy)
    strategy, recorder, weights = _setup(tmp_path)
    grid = NodeGrid([71, 72, 73])
    msgs = sorted(strategy.configure_train(1, ArrayRecord(weights), ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    lying = _reply(msgs[0], 71, weights, {"num-examples": 10, "global_eval_loss": 0.3,
                                          "node_id": 5.0, "train_loss": float("nan")})
    lying.content["extra"] = ArrayRecord([np.ones(3, np.float32)])
    replies = [lying, _reply(msgs[1], 72, weights, {"num-examples": 10, "train_loss": 1.0}),
               _reply(msgs[2], 73, None, {"num-examples": 10})]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None and metrics["train_loss"] == 1.0
    assert len(seen) == 2 and not any(m is r for m in seen for r in replies)
    for msg in seen:
        assert list(msg.content.array_records) == ["arrays"]
        assert dict(msg.content["metrics"]) == {"num-examples": 10.0}
    clients = recorder.clients
    assert clients["71"]["node_id"] == "71" and "node_id" not in clients["71"]["device"]
    assert "dropped 1 extra ArrayRecord(s) ('extra')" in clients["71"]["dropped"]
    assert [e["error"] for e in recorder.row["errors"]] == [
        "rejected: the reply carries no weights (no ArrayRecord 'arrays')"]
