"""The device's idle/busy state from the SuperNode's log, and stopping without losing a reply."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from fedfleet.client import node
from fedfleet.client.activity import Activity
from fedfleet.client.node import JoinOptions
from fedfleet.client.nodedata import NodeData
from fedfleet.shared.constants import ACTIVITY_FILE

# The lines Flower 1.42's SuperNode prints for one message (start_client_internal.py).
ONE_MESSAGE = ["INFO :      SuperNode ID: 1234", "INFO :      ",
               "INFO :      [RUN 99, ROUND 3]",
               "INFO :      Receiving: train message (ID: abc)",
               "INFO :      Received successfully", "INFO :      [RUN 99, ROUND 3]",
               "INFO :      Sending: train message (ID: def)",
               "INFO :      Sent successfully"]


def _state(home: Path) -> dict[str, object]:
    return dict(json.loads((home / ACTIVITY_FILE).read_text()))


def test_activity_follows_one_message_from_receiving_to_sent(tmp_path: Path) -> None:
    """Busy from 'Receiving' (with run and round) until 'Sent successfully'."""
    # Prepare
    activity = Activity(tmp_path)
    seen = [_state(tmp_path)["state"]]
    # Execute
    for line in ONE_MESSAGE:
        activity.feed(line)
        seen.append(_state(tmp_path)["state"])
    # Assert
    assert seen == ["starting", "idle", "idle", "idle", "busy", "busy", "busy", "busy", "idle"]
    final = _state(tmp_path)
    assert final["node_id"] == "1234" and final["messages"] == 1
    assert "round" not in final and not activity.busy


def test_activity_names_the_round_while_busy_and_a_failed_send_frees_it(
        tmp_path: Path) -> None:
    """The file says which run and round; a failed send ends the message too."""
    activity = Activity(tmp_path)
    for line in ONE_MESSAGE[:4]:
        activity.feed(line)
    busy = _state(tmp_path)
    assert (busy["state"], busy["run_id"], busy["round"], busy["message_type"]) == \
        ("busy", "99", "3", "train")
    activity.feed("ERROR :     Failed to send message def: connection reset")
    assert _state(tmp_path)["state"] == "idle" and activity.wait_idle(0)


FAKE_SUPERNODE = """
import signal, sys, time
marks = sys.argv[1]
def term(*_):
    open(marks, "a").write(f"term {time.time()}\\n"); sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("SuperNode ID: 7", flush=True)
print("[RUN 1, ROUND 2]", flush=True)
print("Receiving: train message (ID: a)", flush=True)
time.sleep(2)
open(marks, "a").write(f"sent {time.time()}\\n")
print("Sent successfully", flush=True)
time.sleep(60)
"""


def test_sigterm_while_busy_waits_for_the_reply_before_stopping_the_supernode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arrives mid-message: the SuperNode is stopped only after it sent the reply."""
    # Prepare: a stand-in SuperNode that answers one message in 2 s
    script, marks = tmp_path / "supernode.py", tmp_path / "marks"
    script.write_text(FAKE_SUPERNODE)
    monkeypatch.setattr(node, "supernode_command",
                        lambda opts: [sys.executable, str(script), str(marks)])
    opts = JoinOptions(server="127.0.0.1:1", node=NodeData(), home=tmp_path / "home",
                       insecure=True, drain_timeout=30)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    # Execute
    try:
        code = node._run_supernode(opts, dict(os.environ))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    # Assert
    events = dict(line.split() for line in marks.read_text().splitlines())
    assert code == 0 and time.monotonic() - started < 20
    assert float(events["term"]) >= float(events["sent"])
    assert _state(tmp_path / "home")["state"] == "stopping"
