"""A real run with ``--optimizer sgd``: the devices must train with SGD, not Adam.

A SuperLink and two SuperNodes on 127.0.0.1, started with the commands a user runs:
one device trains in its warm trainer, the other in its ClientApp process, so both
places that compile (and cache) the model are covered.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fleet_helpers import Fleet
from ports import free_port

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 600


def test_two_devices_train_with_sgd_and_momentum(fleet: Fleet, tmp_path: Path) -> None:
    """Settings, every device's report and the server's model all say SGD at 0.9.

    Devices that silently kept Adam would send no ``sgd_momentum`` (the client reads
    it from the optimizer its model was compiled with), or the wrong value.
    """
    # Prepare
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", "3",
        "--min-clients", "2", "--local-epochs", "1", "--optimizer", "sgd",
        "--momentum", "0.9", "--learning-rate", "0.05", "--exit-when-done",
        "--state-dir", "state", "--output-dir", "out", "--client-wait-timeout", "240")
    for i, trainer in enumerate(("--warm-trainer", "--no-warm-trainer")):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/2", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "90", trainer)
    # Execute
    try:
        code = server.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run did not finish in {RUN_TIMEOUT}s:\n{fleet.log('server')}")
    # Assert
    output = fleet.log("server")
    assert code == 0, output + fleet.log("client0")[-3000:] + fleet.log("client1")[-3000:]
    assert "rounds of fedavg with local SGD (momentum 0.9)" in output
    (run_dir,) = (tmp_path / "out").glob("run-*")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    settings = record["run"]["settings"]
    assert (settings["optimizer"], settings["momentum"]) == ("sgd", 0.9)
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    devices = [client["device"] for r in rounds for client in r["clients"]]
    assert len(devices) == 6, rounds  # both devices, every round
    assert [d.get("sgd_momentum") for d in devices] == [0.9] * 6, devices
    assert {d["warm"] for d in devices} == {0.0, 1.0}  # warm trainer and ClientApp
    losses = [r["train_loss"] for r in rounds]
    accuracies = [r["central_accuracy"] for r in rounds]
    assert losses[-1] < losses[0], losses
    assert accuracies[-1] > max(0.4, accuracies[0]), accuracies  # chance: 0.1

    import keras

    model = keras.models.load_model(run_dir / "final_model.keras")
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == pytest.approx(0.9)
