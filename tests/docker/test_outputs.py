"""After `docker compose up`, the host user owns what the run wrote, without sudo.

The server container stays non-root (UID 49999); outputs-init shares the folder with
the host user who owns it. Runs one short compose run (1 round, ~2 min).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerkit import compose
from ports import free_port

pytestmark = pytest.mark.docker

HOST_UID = 45678  # a host user that is neither root nor the containers' 49999


def _as_host_user(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={HOST_UID}", f"--regid={HOST_UID}",
                           "--clear-groups", *cmd], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def user_outputs(images: None) -> Iterator[tuple[str, dict[str, str], Path]]:
    """Yield a compose project whose ./outputs belongs to a non-root host user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to act as another host user) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="fedfleet-e2e-outputs-", dir="/tmp"))
    base.chmod(0o755)
    outputs = base / "outputs"
    outputs.mkdir()
    os.chown(outputs, HOST_UID, HOST_UID)
    project = f"fedfleet-outputs-{uuid.uuid4().hex[:8]}"
    env = {"FEDFLEET_OUTPUT_DIR": str(outputs), "FEDFLEET_PORT": str(free_port()),
           "FEDFLEET_SECRETS_DIR": str(base / "secrets"), "FEDFLEET_ROUNDS": "1",
           "FEDFLEET_EXIT_WHEN_DONE": "1"}
    try:
        yield project, env, outputs
    finally:
        compose(project, env, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                 timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def test_the_host_user_can_edit_and_delete_a_run(
        user_outputs: tuple[str, dict[str, str], Path]) -> None:
    """Files written by UID 49999; the host user reads, edits and removes them all."""
    project, env, outputs = user_outputs
    up = compose(project, env, "up", "--detach", "--no-build", timeout=600)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 600
    record: dict[str, object] = {}
    while record.get("status") != "completed":
        assert time.monotonic() < deadline, compose(project, env, "logs").stdout[-4000:]
        time.sleep(3)
        found = list(outputs.glob("run-*/metrics.json"))
        if found and (found[0].parent / "final_model.keras").exists():
            try:
                record = json.loads(found[0].read_text())
            except json.JSONDecodeError:
                continue
    init = compose(project, env, "logs", "--no-color", "outputs-init", timeout=60).stdout
    assert f"owned by UID {HOST_UID} (host owner)" in init, init
    run_dir = next(outputs.glob("run-*"))
    metrics = run_dir / "metrics.json"
    assert metrics.stat().st_uid == 49999  # the server container is still not root
    assert outputs.stat().st_uid == HOST_UID
    edit = _as_host_user("sh", "-c", f"cat {metrics} > /dev/null && echo >> {metrics}")
    assert edit.returncode == 0, edit.stderr
    removed = _as_host_user("rm", "-r", str(run_dir))
    assert removed.returncode == 0, removed.stderr
    assert list(outputs.iterdir()) == []
