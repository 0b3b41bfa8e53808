"""A child started through the tether dies with its parent, even a SIGKILLed one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

PARENT = """
import os, signal, sys
from fedfleet.shared import process
child = process.start([sys.executable, "-c", "import time; time.sleep(120)"], os.environ)
print(child.pid, flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_child_is_stopped_when_its_parent_is_killed() -> None:
    """SIGKILL the parent: the tethered child gets SIGTERM instead of living on."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.stdin.write("\n")
        parent.stdin.flush()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, 9)


def test_usage_error_without_separator() -> None:
    """A malformed call says how to use it and fails."""
    done = subprocess.run([sys.executable, "-m", "fedfleet.shared.tether", "15", "x"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "usage:" in done.stderr
