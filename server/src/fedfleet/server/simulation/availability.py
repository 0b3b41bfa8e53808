"""Offline virtual devices are not sampled: a grid that filters ``get_node_ids``.

Flower's simulation engine keeps every virtual device online. ``AvailabilityGrid``
wraps the simulation's grid and, in each round, leaves out of ``get_node_ids`` the
devices the plan says are offline, so the strategy samples (and ``--min-clients``
counts) only the online ones, as in a fleet with churn. It learns the round from
:meth:`round_started` (fedfleet's strategy wrapper calls it through ``PromptGrid``)
and which node id is which device by asking each node once (``query.simulated_device``,
answered by the simulation's ClientApp from its ``partition-id``). Each round's count
of online devices goes to ``simulation.json`` in the run's folder and to the log.

It also takes each reply's placement (:data:`~.plan.PLACEMENT_KEY`, added by the
simulation's ClientApp in Ray) out of the reply, so fedfleet's ServerApp sees the reply
a device would send, and tallies it per Ray node in ``simulation.json``
(``ray_nodes``: each node's IP address, host, actors, devices and replies).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedfleet.server.run.grid import WrappedGrid
from fedfleet.server.simulation.plan import (
    DEVICE_KEY,
    PLACEMENT_KEY,
    QUERY_ACTION,
    SimulationPlan,
)
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError

log = logging.getLogger("fedfleet")

SIMULATION_JSON = "simulation.json"
MAPPING_TIMEOUT = 300.0
"""Seconds the one-time "which device are you" round may take."""


class RayNode:
    """What one Ray node did in a run: its address, actors, devices and replies."""

    def __init__(self, ip: str, host: str) -> None:
        """Start an empty tally for the node at ``ip`` on ``host``."""
        self.ip = ip
        self.host = host
        self.actors: set[str] = set()
        self.devices: set[int] = set()
        self.replies = 0

    def to_json(self, node_id: str) -> dict[str, Any]:
        """Return the tally as ``simulation.json`` records it."""
        return {"node_id": node_id, "ip": self.ip, "host": self.host,
                "actors": len(self.actors), "devices": len(self.devices),
                "replies": self.replies}


class AvailabilityGrid(WrappedGrid):
    """Delegates to ``grid``; ``get_node_ids`` returns only this round's online devices."""

    def __init__(self, grid: Grid, plan: SimulationPlan, directory: Path | None = None
                 ) -> None:
        """Wrap ``grid``; ``directory`` (the run's folder) gets ``simulation.json``."""
        super().__init__(grid)
        self.plan = plan
        self._directory = directory
        self.run_round = 1
        self.devices: dict[int, int] = {}
        """Node id -> device index (learned once, only when the plan has churn)."""
        self.rounds: list[dict[str, Any]] = []
        self.ray_nodes: dict[str, RayNode] = {}
        """Ray node id -> what ran there (from the replies' placement)."""
        self._offline: set[int] = set()

    def round_started(self, run_round: int) -> None:
        """Draw who is offline in ``run_round``; record how many are online."""
        self.run_round = run_round
        self._offline = self.plan.offline(run_round)
        online = self.plan.devices - len(self._offline)
        self.rounds = [r for r in self.rounds if r["round"] != run_round]
        self.rounds.append({"round": run_round, "available": online,
                            "offline": sorted(self._offline)})
        if self.plan.has_churn:
            log.info("Round %d: %d of %d virtual devices online", run_round, online,
                     self.plan.devices)
        self._write()

    def get_node_ids(self) -> Iterable[int]:
        """Return the nodes online in this round."""
        nodes = list(self._grid.get_node_ids())
        if not self.plan.has_churn or not self._offline:
            return nodes
        if any(node not in self.devices for node in nodes):
            self._learn_devices(nodes)
        return [n for n in nodes if self.devices.get(n, -1) not in self._offline]

    def _learn_devices(self, nodes: list[int]) -> None:
        """Ask every node which device it is (once per node)."""
        unknown = [n for n in nodes if n not in self.devices]
        started = time.monotonic()
        messages = [Message(RecordDict(), dst_node_id=node,
                            message_type=f"query.{QUERY_ACTION}") for node in unknown]
        for reply in self._grid.send_and_receive(messages, timeout=MAPPING_TIMEOUT):
            record = reply.content.config_records.get(DEVICE_KEY) \
                if not reply.has_error() else None
            device = record.get("index") if record is not None else None
            if not isinstance(device, int) or isinstance(device, bool):
                reason = reply.error.reason if reply.has_error() else "no device index"
                raise FedfleetError(f"virtual node {reply.metadata.src_node_id} did not "
                                    f"say which device it is: {reason}")
            self.devices[reply.metadata.src_node_id] = device
        missing = [n for n in unknown if n not in self.devices]
        if missing:
            raise FedfleetError(f"{len(missing)} virtual devices did not say which "
                                "device they are")
        log.info("Mapped %d virtual nodes to their devices in %.1fs", len(unknown),
                 time.monotonic() - started)
        self._write()

    def _write(self) -> None:
        if self._directory is None:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        record = {"devices": self.plan.devices, "cpus_per_device": self.plan.cpus,
                  "gpus_per_device": self.plan.gpus, "unavailable": self.plan.unavailable,
                  "availability_trace": bool(self.plan.availability),
                  "rounds": self.rounds,
                  "nodes": {str(n): d for n, d in sorted(self.devices.items())},
                  "ray_nodes": [node.to_json(node_id) for node_id, node
                                in sorted(self.ray_nodes.items(),
                                          key=lambda item: (item[1].ip, item[0]))]}
        write_atomic(self._directory / SIMULATION_JSON, json.dumps(record, indent=1))

    # Replies pass through with the placement taken out.

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pass through, taking the placement out of the replies."""
        return self.take_placements(self._grid.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Pass through, taking the placement out of the replies."""
        return self.take_placements(self._grid.send_and_receive(messages, timeout=timeout))

    def take_placements(self, replies: Iterable[Message]) -> list[Message]:
        """Remove :data:`PLACEMENT_KEY` from ``replies``, tallying it per Ray node."""
        replies = list(replies)
        noted = False
        for reply in replies:
            record = (reply.content.config_records.get(PLACEMENT_KEY)
                      if not reply.has_error() else None)
            if record is None:
                continue
            del reply.content[PLACEMENT_KEY]
            node_id = str(record.get("ray-node", ""))
            node = self.ray_nodes.setdefault(
                node_id, RayNode(str(record.get("ip", "")), str(record.get("host", ""))))
            node.actors.add(str(record.get("actor", "")))
            device = record.get("device")
            if isinstance(device, int) and not isinstance(device, bool):
                node.devices.add(device)
            node.replies += 1
            noted = True
        if noted:
            self._write()
        return replies


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def ray_nodes_line(directory: Path) -> str | None:
    """Return one line on which Ray nodes did a run's work, from its ``simulation.json``.

    ``None`` when the file is missing or unreadable or names no Ray node.
    """
    try:
        record = json.loads((directory / SIMULATION_JSON).read_text())
        nodes = [n for n in record.get("ray_nodes", []) if isinstance(n, dict)]
    except (OSError, ValueError, AttributeError):
        return None
    if not nodes:
        return None
    try:
        parts = [f"{n.get('ip') or n.get('node_id', '?')}: "
                 f"{_count(int(n['actors']), 'actor', 'actors')}, "
                 f"{_count(int(n['replies']), 'reply', 'replies')} of "
                 f"{_count(int(n['devices']), 'device', 'devices')}" for n in nodes]
    except (KeyError, TypeError, ValueError):
        return None
    return f"Ray nodes: {len(nodes)} ({'; '.join(parts)})"


def device_reply(msg: Message, device: int) -> Message:
    """Return a virtual device's answer to ``query.simulated_device``."""
    return Message(RecordDict({DEVICE_KEY: ConfigRecord({"index": device})}),
                   reply_to=msg)
