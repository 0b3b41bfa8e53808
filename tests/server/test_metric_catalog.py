"""The metric catalog drives the intake, recorder, run record, plots, TensorBoard, report.

A hostile metrics dict is refused metric by metric with reasons (the reply still
counts), and a metric added to a copy of the catalog reaches every reader.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server.results.plots import plot_files, write_plots
from fedfleet.server.results.report import render_report, round_columns, write_report
from fedfleet.server.results.run_files import RunFiles
from fedfleet.server.results.tensorboard import round_scalars
from fedfleet.server.run.intake import Intake, IntakeLimits
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.shared.metrics import CATALOG, Metric
from fedfleet.shared.runrecord import read_record, round_line
from fedfleet.shared.weights import specs_of

BASE = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
HONEST = {"num-examples": 100, "train_loss": 0.5, "train_accuracy": 0.8,
          "train_time_s": 1.5, "warm": 1.0}
BATTERY = Metric("battery", "the device's battery charge", high=1, phases=("train",),
                 aggregate="weighted_mean", round_key="battery", line="battery",
                 line_format=".0%", report="battery", plot="battery",
                 plot_label="mean over devices", device_plot="clients_battery",
                 device_plot_title="Battery per device{devices}",
                 round_tag="device/battery", device_tag="device_battery")
WITH_BATTERY = CATALOG.with_metric(BATTERY)


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield


def _reply(node: int, metrics: dict[str, Any]) -> Message:
    instruction = Message(RecordDict(), dst_node_id=node, message_type="train")
    content = RecordDict({"arrays": ArrayRecord([np.ones_like(b) for b in BASE]),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=instruction)


def test_a_hostile_metrics_dict_is_refused_metric_by_metric(tmp_path: Path) -> None:
    """Lists, NaN, inf, huge, negative, unknown and long names: dropped, with reasons.

    The reply's weights still count, the notes reach the written record, and no
    refused value is anywhere in it.
    """
    # Prepare
    hostile = {**HONEST, "train_loss": float("nan"), "train_accuracy": float("inf"),
               "train_time_s": [1.0, 2.0], "client_time_s": 2**63 - 1,
               "queue_s": -0.65, "handler_s": -1.0, "warm": 0.5, "sgd_momentum": 1e300,
               "unknown_metric": 1.0, "x" * 5000: 1.0, "node_id": 3.0}
    intake = Intake(specs_of(BASE), "none", IntakeLimits())
    recorder = RunRecorder(RunFiles(tmp_path / "run-1"), {"run_id": 1, "num_rounds": 1})
    # Execute
    recorder.begin_round(1)
    result = intake.train([_reply(1, hostile), _reply(2, HONEST)], BASE)
    recorder.train_replies(result)
    recorder.aggregated(result.metrics)
    recorder.end_round(None, None)
    # Assert
    assert not result.rejected and len(result.accepted) == 2
    report = next(r for r in result.reports if r.node_id == "1")
    assert report.metrics == {"num-examples": 100.0}
    notes = report.dropped
    for key in ("train_loss", "train_accuracy", "train_time_s"):
        assert any(n.startswith(f"dropped {key}: ") and "not a finite number" in n
                   for n in notes), key
    assert "dropped queue_s: -0.65 is outside [0, 604800]" in notes
    assert "dropped handler_s: -1 is outside [0, 604800]" in notes
    assert "dropped warm: 0.5 is not a whole number" in notes
    assert "dropped sgd_momentum: 1e+300 is outside [0, 1]" in notes
    assert "dropped client_time_s: 9.22337e+18 is outside [0, 604800]" in notes
    assert any(n.startswith("dropped 3 unknown metric keys (") for n in notes)
    assert all(len(n) < 200 for n in notes)
    saved = read_record(tmp_path / "run-1")
    assert saved is not None
    (row,) = saved["rounds"]
    client = next(c for c in row["clients"] if c["node_id"] == "1")
    assert client["device"] == {"num-examples": 100.0} and client["dropped"] == notes
    assert row["train_loss"] == 0.5 and row["max_client_train_s"] == 1.5


def test_a_new_catalog_metric_reaches_every_reader(tmp_path: Path) -> None:
    """One entry in a catalog copy: kept, averaged, recorded, drawn, logged, tabled."""
    # Prepare
    intake = Intake(specs_of(BASE), "none", IntakeLimits(), catalog=WITH_BATTERY)
    files = RunFiles(tmp_path / "run-1")
    recorder = RunRecorder(files, {"run_id": 1, "num_rounds": 2}, catalog=WITH_BATTERY)
    # Execute
    for run_round in (1, 2):
        recorder.begin_round(run_round)
        result = intake.train([_reply(1, {**HONEST, "battery": 0.2}),
                               _reply(2, {**HONEST, "battery": 0.6})], BASE)
        recorder.train_replies(result)
        recorder.aggregated(result.metrics)
        row = recorder.end_round(None, None)
    plots = write_plots(tmp_path / "run-1", recorder.record, catalog=WITH_BATTERY)
    # Assert
    assert result.metrics["battery"] == pytest.approx(0.4)
    assert all(not r.dropped for r in result.reports)
    assert row.get("battery") == pytest.approx(0.4)  # type: ignore[comparison-overlap]
    assert "battery 40%" in round_line(row, 2, WITH_BATTERY)
    assert "battery" not in round_line(row, 2)
    with (files.directory / "metrics.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert float(table[-1]["battery"]) == pytest.approx(0.4)
    assert {p.name for p in plots} == set(plot_files(WITH_BATTERY).values())
    assert {"battery.png", "clients_battery.png"} <= {p.name for p in plots}
    assert "battery.png" not in plot_files().values()
    scalars = round_scalars(dict(row), WITH_BATTERY)
    assert scalars["device/battery"] == pytest.approx(0.4)
    assert scalars["device_battery/1"] == pytest.approx(0.2)
    assert "device/battery" not in round_scalars(dict(row))
    assert ("battery", "battery") in round_columns(WITH_BATTERY)
    assert round_columns(WITH_BATTERY)[-1] == ("checkpoint", "checkpoint")
    page = write_report(files.directory, recorder.record, plots, catalog=WITH_BATTERY)
    assert "<th>battery</th>" in page.read_text()
    assert "battery" not in render_report(files.directory, recorder.record)


def test_the_default_catalog_does_not_know_the_new_metric() -> None:
    """Without the entry, the same reply's metric is dropped as unknown."""
    result = Intake(specs_of(BASE), "none", IntakeLimits()).train(
        [_reply(1, {**HONEST, "battery": 0.2})], BASE)
    assert result.reports[0].dropped == ["dropped 1 unknown metric key ('battery')"]
