"""Build both images and run the default `docker compose up` for real.

Needs a Docker engine with the Compose plugin and the base image (``dev/setup.sh``
provides all three). When Docker is missing the tests are skipped, unless
FEDFLEET_REQUIRE_DOCKER=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).parents[2]
UP_TIMEOUT = 1500  # the default 10 rounds take ~6-8 min on 2 cores


def _docker_ready() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    for cmd in (["docker", "info"], ["docker", "compose", "version"]):
        if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
            return f"'{' '.join(cmd)}' failed"
    return None


@pytest.fixture(scope="module")
def docker_ok() -> None:
    """Skip (or fail under CI) without a working Docker engine and Compose plugin."""
    problem = _docker_ready()
    if problem and os.environ.get("FEDFLEET_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker required but {problem}; run dev/setup.sh")
    if problem:
        pytest.skip(problem)


def _compose(project: str, env: dict[str, str], *args: str, timeout: float = 1200
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "compose", "-p", project, *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def images(docker_ok: None) -> None:
    """Build both images exactly as `docker compose up --build` would."""
    done = _compose("fedfleet-build", {}, "build", timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack(images: None, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """Yield a compose project of its own with outputs in tmp_path; tear it down."""
    project = f"fedfleet-e2e-{uuid.uuid4().hex[:8]}"
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    env = {"FEDFLEET_OUTPUT_DIR": str(outputs), "FEDFLEET_PORT": str(_free_port())}
    try:
        yield project, env, outputs
    finally:
        _compose(project, env, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                 timeout=300)


def test_default_compose_run_trains_a_useful_model(
        stack: tuple[str, dict[str, str], Path]) -> None:
    """`docker compose up` trains the default run; every round and the model land."""
    project, env, outputs = stack
    up = _compose(project, env, "up", "--detach", "--no-build", timeout=600)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + UP_TIMEOUT
    record = None
    while time.monotonic() < deadline:
        found = list(outputs.glob("run-*/metrics.json"))
        if found:
            record = json.loads(found[0].read_text())
            if record["status"] != "running":
                break
        time.sleep(5)
    logs = _compose(project, env, "logs", "--no-color", "server", timeout=120).stdout
    assert record is not None and record["status"] == "completed", logs[-5000:]

    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, 11))
    assert all(r["train_replies"] == 3 for r in rounds)
    final = rounds[-1]["central_accuracy"]
    assert final >= 0.85, [r["central_accuracy"] for r in rounds]
    assert "done: run" in logs and "round 10/10" in logs

    run_dir = next(outputs.glob("run-*"))
    assert len(list((run_dir / "checkpoints").glob("round-*.keras"))) == 10
    import keras

    from fedfleet.shared.data import load_dataset

    test = load_dataset("builtin:digits", split="test")
    model = keras.models.load_model(run_dir / "final_model.keras")
    predictions = model.predict(test.x, verbose=0).argmax(axis=1)
    assert float(np.mean(predictions == test.y)) == pytest.approx(final, abs=1e-6)

    status = _compose(project, env, "ps", "--format", "json", timeout=60).stdout
    states = [json.loads(line) for line in status.splitlines() if line.strip()]
    health = {s["Service"]: s.get("Health", "") for s in states}
    assert health.get("server") == "healthy", health


def _image_run(image: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", image,
                           *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_images_run_as_non_root_and_hold_only_their_side(images: None) -> None:
    """Both images run as 'app'; the client image has no server code and vice versa."""
    for image in ("fedfleet-server:0.1.0", "fedfleet-client:0.1.0"):
        user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}",
                               image], capture_output=True, text=True, check=True)
        assert user.stdout.strip() == "app"
    probe = "import importlib.util as u; print(bool(u.find_spec('fedfleet.server')), " \
            "bool(u.find_spec('fedfleet.client')))"
    assert _image_run("fedfleet-client:0.1.0", "-c", probe).stdout.split() == \
        ["False", "True"]
    assert _image_run("fedfleet-server:0.1.0", "-c", probe).stdout.split() == \
        ["True", "False"]
