"""``fleet status``: one typed row per device, gathered in parallel, as a table or JSON."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypedDict

import docker.errors

from fedfleet.server.fleet.activity import describe, read_activity
from fedfleet.server.fleet.channels import close_quietly, connect
from fedfleet.server.fleet.common import Device, Fleet, short_id
from fedfleet.server.fleet.container import HASH_LABEL, IMAGE_LABEL, NODE_LABEL, VERSION_LABEL
from fedfleet.server.fleet.nodes import state_in
from fedfleet.server.fleet.parallel import each
from fedfleet.server.fleet.records import last_rounds, newest_records, participation
from fedfleet.server.fleet.specs import Inventory
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.tables import rows_text


class StatusRow(TypedDict, total=False):
    """One device in ``fleet status`` (the JSON output has exactly these keys)."""

    device: str
    endpoint: str
    reachable: bool
    error: str
    container: str
    health: str
    image: str | None
    version: str | None
    image_id: str
    restarts: int
    inventory_hash: str | None
    digest: str | None
    uptime_s: int | None
    activity: str | None
    node_id: str
    online: str
    last_round: str | None
    rounds: str
    rounds_run: int


COLUMNS = [("DEVICE", "device"), ("CONTAINER", "container"), ("HEALTH", "health"),
           ("IMAGE", "image_id"), ("VERSION", "version"), ("NODE", "node_id"),
           ("ONLINE", "online"), ("LAST ROUND", "last_round"), ("ROUNDS", "rounds"),
           ("ACTIVITY", "activity"),
           ("UPTIME", "uptime"), ("RESTARTS", "restarts")]


def device_status(device: Device, nodes: dict[int, dict[str, Any]],
                  rounds: dict[str, tuple[int, int]],
                  taken: dict[str, tuple[int, int, int]] | None = None) -> StatusRow:
    """Return one status row: container, health, image, node, online, last round.

    ``taken``: per node (run ID, rounds contributed to, rounds asked in), shown
    as ``rounds`` ("3/4") with ``rounds_run``.
    """
    row: StatusRow = {"device": device.spec.name, "endpoint": device.spec.endpoint.url,
                      "reachable": True}
    container = device.current()
    if container is None:
        row["container"] = "absent"
        return row
    attrs = container.attrs
    state = attrs["State"]
    labels = container.labels
    row["container"] = state.get("Status")
    row["health"] = state.get("Health", {}).get("Status", "none")
    row["image"], row["version"] = labels.get(IMAGE_LABEL), labels.get(VERSION_LABEL)
    row["image_id"] = short_id(str(attrs.get("Image", "")))
    row["restarts"] = int(attrs.get("RestartCount", 0))
    row["inventory_hash"] = labels.get(HASH_LABEL)
    try:
        digests = device.client.api.inspect_image(attrs["Image"]).get("RepoDigests") or []
        row["digest"] = digests[0].split("@", 1)[1][:19] if digests else None
    except docker.errors.APIError:
        row["digest"] = None
    if state.get("Running"):
        started = _parse_time(state.get("StartedAt", ""))
        row["uptime_s"] = int(time.time() - started) if started else None
        activity = read_activity(container)
        if activity is not None:
            row["activity"] = activity.get("state")
            if activity.get("state") == "busy":
                row["activity"] = f"busy ({describe(activity, short=True)})"
    node = labels.get(NODE_LABEL, "")
    if node.isdigit():
        row["node_id"] = node
        row["online"] = state_in(nodes, int(node)).status or "not registered"
        last = rounds.get(node)
        row["last_round"] = f"{last[1]} (run {last[0]})" if last else None
        share = (taken or {}).get(node)
        if share is not None:
            row["rounds"] = f"{share[1]}/{share[2]}"
            row["rounds_run"] = share[0]
    return row


def gather(inventory: Inventory, fleet: Fleet, names: Sequence[str], parallel: int
           ) -> list[StatusRow]:
    """Return a row per device in ``names`` (``parallel`` asked at once), then the server's.

    A device that cannot be reached or asked gets a row with its ``error``.
    """
    try:
        nodes = fleet.registry.nodes(fresh=True)
        server_error = None
    except FedfleetError as err:
        nodes, server_error = {}, str(err)
    records = newest_records(inventory.server.outputs)
    rounds = last_rounds(None, records=records)
    taken = participation(records)

    def one(name: str) -> StatusRow:
        spec = inventory.devices[name]
        try:
            client = connect(spec.endpoint, timeout=30)
        except FedfleetError as err:
            return {"device": name, "endpoint": spec.endpoint.url, "reachable": False,
                    "error": str(err)}
        try:
            return device_status(Device(client, spec, fleet), nodes, rounds, taken)
        except Exception as err:  # one device must not hide the others
            return {"device": name, "endpoint": spec.endpoint.url, "reachable": True,
                    "error": f"{type(err).__name__}: {err}"}
        finally:
            close_quietly(client)

    rows = each(names, one, parallel)
    if server_error:
        for row in rows:  # with no node list, "not registered" would be a guess
            row["online"] = "unknown"
        rows.append({"device": "(server)", "reachable": False, "error": server_error})
    return rows


def render(rows: Sequence[StatusRow], format: str = "table") -> str:
    """Return ``rows`` as JSON, or as the status table with each error on a line below."""
    cells = [_cells(row) for row in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells])
              for i, (title, _) in enumerate(COLUMNS)]
    header = "  ".join(t.ljust(w) for (t, _), w in zip(COLUMNS, widths, strict=True))

    def line(row: Mapping[str, Any]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(_cells(row), widths, strict=True)
                         ).rstrip()

    text = rows_text(list(rows), format, header, line)
    if format == "json":
        return text
    errors = [f"{r['device']}: {r['error']}" for r in rows if r.get("error")]
    return "\n".join([text, *errors])


def _cells(row: Mapping[str, Any]) -> list[str]:
    shown = dict(row, uptime=_uptime(row.get("uptime_s")))
    if not row.get("reachable"):
        shown["container"] = "unreachable"
    return [str(shown.get(key) if shown.get(key) is not None else "-") for _, key in COLUMNS]


def _uptime(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _parse_time(text: str) -> float | None:
    """Parse Docker's RFC 3339 time (nanoseconds allowed) to a Unix time."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", text)
    if match is None or text.startswith("0001-"):
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=timezone.utc).timestamp()
