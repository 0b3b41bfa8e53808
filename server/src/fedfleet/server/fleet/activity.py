"""The client's ``activity.json``: whether the device is answering a message right now."""

from __future__ import annotations

import json
from typing import Any

import docker
import docker.errors

from fedfleet.server.fleet.container import CLIENT_HOME
from fedfleet.shared.constants import ACTIVITY_FILE


def read_activity(container: Any) -> dict[str, Any] | None:
    """Return the client's ``activity.json`` (idle/busy), or None if unreadable."""
    try:
        result = container.exec_run(["cat", f"{CLIENT_HOME}/{ACTIVITY_FILE}"])
    except docker.errors.APIError:
        return None
    if result.exit_code != 0:
        return None
    try:
        value = json.loads(result.output)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(activity: dict[str, Any], short: bool = False) -> str:
    """Describe the message a busy device is answering, from its activity.json."""
    kind = activity.get("message_type")
    where = f"round {activity['round']}" if activity.get("round") else ""
    if short:
        return " ".join(filter(None, [kind, where])) or "message"
    return " ".join(filter(None, [f"its {kind or 'a'} message", where and f"of {where}",
                                  f"in run {activity.get('run_id')}"]))
