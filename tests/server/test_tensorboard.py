"""TensorBoard event files hold the run's scalars, per round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from records import NODES, sample_record

from fedfleet.server.results.tensorboard import TensorBoardLog, round_scalars
from fedfleet.shared.cli import cli


def _read_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """Read every scalar back with TensorFlow's own event reader."""
    import tensorflow as tf

    found: dict[str, dict[int, float]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return found


def test_rounds_are_written_as_scalars(tmp_path: Path) -> None:
    """Every round's accuracies, losses, replies and per-device values, at step = round."""
    record = sample_record(4)
    with TensorBoardLog(tmp_path / "tb") as log:
        log.write_initial(record["initial"])
        for row in record["rounds"]:
            log.write_round(row)
    scalars = _read_scalars(tmp_path / "tb")
    assert scalars["accuracy/central_test"][0] == pytest.approx(0.09)
    for row in record["rounds"]:
        step = row["round"]
        assert scalars["accuracy/central_test"][step] == pytest.approx(row["central_accuracy"])
        assert scalars["accuracy/federated_eval"][step] == pytest.approx(row["eval_accuracy"])
        assert scalars["loss/train"][step] == pytest.approx(row["train_loss"])
        assert scalars["replies/aggregated"][step] == row["train_replies"]
    assert scalars["replies/rejected"] == {1: 0, 2: 1, 3: 0, 4: 0}
    assert scalars["replies/timed_out"] == {1: 0, 2: 0, 3: 1, 4: 0}
    assert set(scalars[f"device_train_time_s/{NODES[0]}"]) == {1, 2, 3, 4}


def test_values_a_device_made_up_are_left_out() -> None:
    """NaN, infinities and text are not scalars."""
    row = {"round": 1, "central_accuracy": float("nan"), "train_loss": "low",
           "clients": [{"node_id": "7", "eval_accuracy": float("inf"),
                        "train_time_s": 1.5}]}
    scalars = round_scalars(row)
    assert "accuracy/central_test" not in scalars and "loss/train" not in scalars
    assert "device_accuracy/7" not in scalars and scalars["device_train_time_s/7"] == 1.5


def test_report_writes_tensorboard_files_for_an_existing_run(tmp_path: Path) -> None:
    """'fedfleet report RUN_DIR --tensorboard DIR' backfills a finished run."""
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(sample_record(3)))
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--tensorboard",
                                      str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert sorted(_read_scalars(tmp_path / "tb")["accuracy/central_test"]) == [0, 1, 2, 3]
