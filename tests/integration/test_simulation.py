"""``fedfleet simulate``: virtual devices on Flower's simulation engine (Ray).

Its run folder reads like a real run's (files, metrics.json keys, plots, report, export).

The real run beside it is the smallest federation (two SuperNodes, two rounds); only
the layouts are compared, never the values.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Fleet, cli
from ports import free_port

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 900
SIMULATION_ONLY = {"simulation.json"}
"""What a simulated run's folder has beyond a real run's."""


def _wait(fleet: Fleet, name: str, proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not finish in {RUN_TIMEOUT}s:\n{fleet.log(name)[-5000:]}")
    output = fleet.log(name)
    assert code == 0, output[-5000:]
    return output


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def _shape(record: dict[str, Any]) -> dict[str, Any]:
    """Return the keys of a run record, level by level (no values)."""
    return {"top": sorted(record), "run": sorted(record["run"]),
            "settings": sorted(record["run"]["settings"]),
            "rounds": [sorted(row) for row in record["rounds"]],
            "initial": sorted(record["initial"] or {})}


def _simulate(fleet: Fleet, tmp_path: Path) -> tuple[Path, str]:
    proc = fleet.start("sim", "simulate", "--devices", "10", "--rounds", "2",
                       "--local-epochs", "1", "--fraction-train", "0.5",
                       "--unavailable", "0.2", "--output-dir", "sim",
                       "--state-dir", "sim-state")
    output = _wait(fleet, "sim", proc)
    (run_dir,) = (tmp_path / "sim").glob("run-*")
    return run_dir, output


def test_a_simulated_run_reads_like_a_real_one(fleet: Fleet, tmp_path: Path) -> None:
    """10 virtual devices, 2 rounds: the real run's lines, files, keys and plots."""
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", "2",
        "--local-epochs", "1", "--min-clients", "2", "--exit-when-done",
        "--state-dir", "state", "--output-dir", "real", "--client-wait-timeout", "240")
    for i in range(2):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/2", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "60")
    _wait(fleet, "server", server)
    (real_dir,) = (tmp_path / "real").glob("run-*")

    sim_dir, output = _simulate(fleet, tmp_path)

    assert "round 1/2 |" in output and "round 2/2 |" in output, output
    assert "done: run" in output and "final accuracy" in output
    assert _files(sim_dir) - _files(real_dir) == SIMULATION_ONLY
    assert _files(real_dir) <= _files(sim_dir)
    real = json.loads((real_dir / "metrics.json").read_text())
    sim = json.loads((sim_dir / "metrics.json").read_text())
    assert _shape(sim) == _shape(real)
    assert sim["status"] == "completed"
    assert all(row["train_replies"] == 4 for row in sim["rounds"])  # 0.5 x 8 online
    header = (real_dir / "metrics.csv").read_text().splitlines()[0]
    assert (sim_dir / "metrics.csv").read_text().splitlines()[0] == header

    availability = json.loads((sim_dir / "simulation.json").read_text())
    assert [r["available"] for r in availability["rounds"]] == [8, 8]
    assert availability["devices"] == 10 and len(availability["nodes"]) == 10
    for row, drawn in zip(sim["rounds"], availability["rounds"], strict=True):
        offline = {node for node, device in availability["nodes"].items()
                   if device in drawn["offline"]}
        assert len(offline) == 2
        trained = {c["node_id"] for c in row["clients"] if "weight" in c}  # this round's
        assert len(trained) == 4 and not offline & trained  # (others: the eval of it)
    assert sim["rounds"][-1]["eval_replies"] == 8  # the last round's evaluate: all online

    report = cli(tmp_path, "report", str(sim_dir))
    assert report.returncode == 0, report.stderr
    assert (sim_dir / "report.html").is_file()
    export = cli(tmp_path, "export", str(sim_dir), "--format", "tflite", timeout=300)
    assert export.returncode == 0, export.stdout + export.stderr
    assert list((sim_dir / "exports").glob("*.tflite"))
    models = cli(tmp_path, "models", str(sim_dir))
    assert models.returncode == 0 and "round" in models.stdout.lower(), models.stdout


def test_device_data_and_an_availability_trace(fleet: Fleet, tmp_path: Path) -> None:
    """One file per device, a trace taking one of three offline each round."""
    import numpy as np

    from fedfleet.shared.data import load_dataset, partition

    digits = load_dataset("builtin:digits")
    (tmp_path / "devices").mkdir()
    for i, name in enumerate(["clinic-a", "clinic-b", "clinic-c"]):
        idx = partition(digits.y, i, 3, "iid", 0.5, 1)
        np.savez(tmp_path / "devices" / f"{name}.npz", x=digits.x[idx], y=digits.y[idx])
    (tmp_path / "trace.csv").write_text("device,1,2\n0,1,0\n2,0,1\n")
    proc = fleet.start("sim", "simulate", "--device-data", "devices", "--availability",
                       "trace.csv", "--rounds", "2", "--local-epochs", "1",
                       "--output-dir", "sim", "--state-dir", "sim-state")
    output = _wait(fleet, "sim", proc)
    assert "Simulating 3 virtual devices" in output and "round 2/2 |" in output

    (run_dir,) = (tmp_path / "sim").glob("run-*")
    record = json.loads((run_dir / "metrics.json").read_text())
    availability = json.loads((run_dir / "simulation.json").read_text())
    assert [(r["available"], r["offline"]) for r in availability["rounds"]] == [
        (2, [2]), (2, [0])]
    for row, offline_device in zip(record["rounds"], (2, 0), strict=True):
        devices = {availability["nodes"][c["node_id"]] for c in row["clients"]
                   if "weight" in c}
        assert devices == {0, 1, 2} - {offline_device}
        assert all(c["weight"] == 383 for c in row["clients"] if "weight" in c)
