"""The model goes home, for real: a SuperLink, two SuperNodes and ``send_final_model``.

A tiny test ServerApp (shipped in the run's bundle in place of fedfleet's) waits for
both devices and calls ``send_final_model``, as the integrator's ServerApp will at
the end of a run. One device has the warm trainer, the other converts in its
ClientApp process; both must store .keras and .tflite with the right digests.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fleet_helpers import FEDFLEET, Fleet, free_port
from no_tensorflow import no_tensorflow_cli

from fedfleet.server.host.control import CONNECTION, Control
from fedfleet.server.host.fab import write_bundle
from fedfleet.shared import process
from fedfleet.shared.data import load_dataset
from fedfleet.shared.fileio import sha256_file
from fedfleet.shared.modelstore import read_index
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

pytestmark = pytest.mark.integration

SERVER_APP = '''"""Test ServerApp: send an (untrained) model of the run home to every device."""

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedfleet.server.run.delivery import send_final_model
from fedfleet.shared.models import build_model
from fedfleet.shared.settings import RunSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = RunSettings.from_run_config(context.run_config)
    deadline = time.monotonic() + 180
    while len(list(grid.get_node_ids())) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    model = build_model(settings.model, settings.shape, settings.num_classes)
    outcomes = send_final_model(grid, list(grid.get_node_ids()),
                                ArrayRecord(model.get_weights()),
                                {"round": 4, "metrics": {"central_accuracy": 0.5}},
                                timeout=240)
    Path(settings.output_dir, "outcomes.json").write_text(
        json.dumps({str(k): v for k, v in outcomes.items()}))
'''


def test_every_device_stores_the_final_model(fleet: Fleet, tmp_path: Path) -> None:
    """Both devices answer 'stored', and their index and files agree on sha256."""
    port = free_port()
    fleet.start("server", "server", "--insecure", "--port", str(port), "--no-run",
                "--state-dir", "state")
    for i, trainer in enumerate(("--warm-trainer", "--no-warm-trainer")):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/2", "--runtime-port", str(free_port()),
                    "--home", f"home{i}", "--connect-timeout", "90", trainer)
    out = tmp_path / "out"
    out.mkdir()
    settings = RunSettings(output_dir=str(out), fedfleet_version=__version__)
    bundle = write_bundle(tmp_path / "bundle", settings)
    (bundle / "fedfleet_app" / "server_app.py").write_text(SERVER_APP)
    control = Control(f"127.0.0.1:{port}", tmp_path / "admin")
    control.configure()
    deadline = time.monotonic() + 120
    while True:  # the SuperLink needs a few seconds before it takes runs
        done = subprocess.run([process.flower_executable("flwr"), "run", str(bundle),
                               CONNECTION, "--format", "json"],
                              env=process.flower_env(control.home), capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode == 0 and '"success": true' in done.stdout:
            break
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(3)
    deadline = time.monotonic() + 420
    while not (out / "outcomes.json").exists():
        assert time.monotonic() < deadline, fleet.log("server")[-4000:] + \
            fleet.log("client0")[-3000:] + fleet.log("client1")[-3000:]
        time.sleep(2)
    outcomes = json.loads((out / "outcomes.json").read_text())
    assert len(outcomes) == 2
    assert all(v.startswith("stored models/run-") for v in outcomes.values()), outcomes
    for i in range(2):
        home = tmp_path / f"home{i}"
        (entry,) = read_index(home)
        assert entry["round"] == 4 and entry["metrics"] == {"central_accuracy": 0.5}
        for kind in ("keras", "tflite"):
            assert sha256_file(home / "models" / entry["files"][kind]) == \
                entry["sha256"][kind]
        assert entry["sha256"]["tflite"][:12] in " ".join(outcomes.values())
    listing = subprocess.run([FEDFLEET, "models", "--home", str(tmp_path / "home0"),
                              "--verify"], capture_output=True, text=True, timeout=120,
                             check=False)
    assert listing.returncode == 0 and "keras ok tflite ok" in listing.stdout, listing
    # The device predicts from what it received, with TensorFlow and Flower not importable.
    test = load_dataset("builtin:digits", split="test")
    np.savez(tmp_path / "samples.npz", x=test.x[:5])
    predicted = no_tensorflow_cli("predict", "--home", str(tmp_path / "home1"),
                                  "samples.npz", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert "HEAVY=\n" in predicted.stderr  # nothing of TensorFlow, Keras or Flower loaded
    received = read_index(tmp_path / "home1")[0]["files"]["tflite"]
    said = predicted.stdout + predicted.stderr
    assert f"model: {tmp_path / 'home1' / 'models' / received}" in said, said
    rows = [line.split() for line in predicted.stdout.splitlines()
            if line.startswith("samples.npz[")]
    assert len(rows) == 5 and all(0 <= int(row[1]) < 10 for row in rows), said
