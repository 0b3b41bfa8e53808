"""The simulation's plan: each virtual device's data and availability.

Also the trace files and the grid that leaves offline devices out of a round.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server.simulation.availability import (
    AvailabilityGrid,
    device_reply,
    ray_nodes_line,
)
from fedfleet.server.simulation.plan import (
    PLACEMENT_KEY,
    QUERY_ACTION,
    RUN_CONFIG_KEY,
    SimulationPlan,
    read_availability,
)
from fedfleet.shared.errors import ConfigError

pytestmark = pytest.mark.usefixtures("task_identity")


def test_a_partitioned_device_gets_its_partition_and_nothing_else() -> None:
    """Device i of N holds partition i of the shared data; the plan survives the run config."""
    plan = SimulationPlan(devices=5, data=("builtin:digits",), label_column="y")
    again = SimulationPlan.from_run_config({RUN_CONFIG_KEY: plan.to_json()})
    assert again == plan
    assert again.node_config(3) == {"data-path": "builtin:digits", "partition-id": 3,
                                    "num-partitions": 5, "label-column": "y",
                                    "class-names": ""}
    with pytest.raises(ConfigError, match="outside 0..4"):
        plan.node_config(5)


def test_a_per_device_entry_is_that_devices_whole_data() -> None:
    """--device-data: device i holds entry i, unpartitioned."""
    plan = SimulationPlan(devices=2, data=("/d/a.csv", "/d/b"), per_device=True)
    assert plan.node_config(1) == {"data-path": "/d/b", "label-column": "label",
                                   "class-names": ""}
    with pytest.raises(ConfigError, match="2 data paths for 3 devices"):
        SimulationPlan(devices=3, data=("/d/a.csv", "/d/b"), per_device=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"devices": 0}, "--devices must be at least 1"),
    ({"unavailable": 1.0}, "--unavailable must be in"),
    ({"availability": {7: (True,)}}, "names device 7"),
])
def test_an_impossible_plan_is_refused(kwargs: dict[str, Any], message: str) -> None:
    """Bad plans fail with a line naming the option."""
    values: dict[str, Any] = {"devices": 3, "data": ("builtin:digits",), **kwargs}
    with pytest.raises(ConfigError, match=message):
        SimulationPlan(**values)


def test_a_run_config_without_a_plan_is_refused() -> None:
    """A run not submitted by 'fedfleet simulate' has no plan to trust."""
    with pytest.raises(ConfigError, match="no simulation plan"):
        SimulationPlan.from_run_config({"num-rounds": 3})
    with pytest.raises(ConfigError, match="malformed"):
        SimulationPlan.from_run_config({RUN_CONFIG_KEY: '{"devices": 3}'})


def test_unavailable_draws_that_share_anew_each_round_and_repeatably() -> None:
    """--unavailable 0.3 of 20: 6 offline per round, others next round; a seed repeats."""
    plan = SimulationPlan(devices=20, data=("builtin:digits",), unavailable=0.3, seed=5)
    rounds = [plan.offline(r) for r in range(1, 6)]
    assert all(len(down) == 6 and down <= set(range(20)) for down in rounds)
    assert len({frozenset(d) for d in rounds}) > 1
    assert rounds == [SimulationPlan(devices=20, data=("builtin:digits",),
                                     unavailable=0.3, seed=5).offline(r) for r in range(1, 6)]
    assert SimulationPlan(devices=20, data=("x",), unavailable=0.3, seed=6).offline(1) \
        != rounds[0]
    assert SimulationPlan(devices=20, data=("x",)).offline(1) == set()


def test_a_trace_takes_devices_offline_and_repeats(tmp_path: Path) -> None:
    """CSV and JSON traces read the same; rounds after the trace start it over."""
    csv_file = tmp_path / "trace.csv"
    csv_file.write_text("device,1,2,3\n0,1,0,1\n2, 0 ,0,1\n")
    json_file = tmp_path / "trace.json"
    json_file.write_text('{"0": [1, 0, true], "2": [false, 0, 1]}')
    trace = read_availability(csv_file)
    assert trace == read_availability(json_file) == {0: (True, False, True),
                                                     2: (False, False, True)}
    plan = SimulationPlan(devices=4, data=("x",), availability=trace)
    assert [plan.offline(r) for r in (1, 2, 3, 4, 5)] == [{2}, {0, 2}, set(), {2}, {0, 2}]
    assert plan.fewest_online(3) == (2, 2)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("t.csv", "", "empty"),
    ("t.csv", "node,1,2\n0,1,1\n", "header must be device,1,2"),
    ("t.csv", "device,1,2\n0,1\n", "line 2: 2 columns"),
    ("t.csv", "device,1\n0,2\n", "'2' is not 1 (online) or 0"),
    ("t.csv", "device,1\nx,1\n", "device 'x' is not an index"),
    ("t.csv", "device,1\n0,1\n0,0\n", "device 0 is listed twice"),
    ("t.json", "{", "not JSON"),
    ("t.json", "[1, 0]", "expected an object"),
    ("t.json", '{"0": [1, 0], "1": [1]}', "same number"),
    ("t.json", '{"0": []}', "same number"),
    ("t.json", '{"0": 1}', "expected a list"),
    ("t.json", "{}", "lists no device"),
    ("t.txt", "device,1\n0,1\n", "use a .csv or .json"),
])
def test_a_malformed_trace_is_one_line(tmp_path: Path, name: str, text: str,
                                       message: str) -> None:
    """Every mistake in a trace file names the file and what is wrong."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        read_availability(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


class FakeSimulationGrid(Grid):
    """Nodes 100+i are device i; queries answered as the simulation's ClientApp does."""

    def __init__(self, devices: int) -> None:
        self.nodes = {100 + i: i for i in range(devices)}
        self.queries = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            assert msg.metadata.message_type == f"query.{QUERY_ACTION}"
            self.queries += 1
            TaskIdentity.node_id = msg.metadata.dst_node_id
            replies.append(device_reply(msg, self.nodes[msg.metadata.dst_node_id]))
            TaskIdentity.node_id = 0
        return replies

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError


def test_offline_devices_are_not_among_the_nodes_of_their_round(tmp_path: Path) -> None:
    """Each round the grid offers only that round's online devices, and records how many."""
    trace = {1: (False, True), 3: (False, False)}
    plan = SimulationPlan(devices=6, data=("x",), availability=trace, unavailable=1 / 6)
    inner = FakeSimulationGrid(6)
    grid = AvailabilityGrid(inner, plan, tmp_path)
    for run_round in (1, 2, 3):
        grid.round_started(run_round)
        online = {inner.nodes[n] for n in grid.get_node_ids()}
        assert online == set(range(6)) - plan.offline(run_round), run_round
        assert {d for d, t in trace.items() if not t[(run_round - 1) % 2]} \
            <= plan.offline(run_round)
    assert inner.queries == 6  # each node asked once which device it is
    record = json.loads((tmp_path / "simulation.json").read_text())
    assert [r["available"] for r in record["rounds"]] == [
        6 - len(plan.offline(r)) for r in (1, 2, 3)]
    assert record["devices"] == 6 and record["nodes"]["103"] == 3


def test_without_churn_every_node_is_offered_and_none_is_asked() -> None:
    """No --unavailable, no trace: the grid is a plain pass-through."""
    inner = FakeSimulationGrid(4)
    grid = AvailabilityGrid(inner, SimulationPlan(devices=4, data=("x",)))
    grid.round_started(1)
    assert sorted(grid.get_node_ids()) == [100, 101, 102, 103] and inner.queries == 0


class RepliesGrid(FakeSimulationGrid):
    """Pulls return prepared replies."""

    def __init__(self, replies: list[Message]) -> None:
        super().__init__(4)
        self.replies = replies

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.replies


def _placed_reply(device: int, node: str, ip: str, actor: str) -> Message:
    msg = Message(RecordDict(), 100 + device, "train")
    TaskIdentity.node_id = 100 + device
    reply = Message(RecordDict({
        "metrics": MetricRecord({"num-examples": 5}),
        PLACEMENT_KEY: ConfigRecord({"ray-node": node, "ip": ip, "host": "h",
                                     "actor": actor, "device": device})}), reply_to=msg)
    TaskIdentity.node_id = 0
    return reply


def test_replies_lose_their_placement_which_is_tallied_per_ray_node(tmp_path: Path) -> None:
    """The ServerApp sees a device's reply; simulation.json and one line say where it ran."""
    # Prepare
    replies = [_placed_reply(0, "n1", "10.0.0.1", "a1"), _placed_reply(1, "n2", "10.0.0.2", "a2"),
               _placed_reply(2, "n1", "10.0.0.1", "a1"), _placed_reply(0, "n1", "10.0.0.1", "a1"),
               _placed_reply(3, "n2", "10.0.0.2", "a3")]
    grid = AvailabilityGrid(RepliesGrid(replies), SimulationPlan(devices=4, data=("x",)),
                            tmp_path)

    # Execute
    pulled = list(grid.pull_messages(["m"]))

    # Assert
    assert len(pulled) == 5
    assert all(list(r.content.keys()) == ["metrics"] for r in pulled)
    record = json.loads((tmp_path / "simulation.json").read_text())
    assert record["ray_nodes"] == [
        {"node_id": "n1", "ip": "10.0.0.1", "host": "h", "actors": 1, "devices": 2,
         "replies": 3},
        {"node_id": "n2", "ip": "10.0.0.2", "host": "h", "actors": 2, "devices": 2,
         "replies": 2}]
    assert ray_nodes_line(tmp_path) == (
        "Ray nodes: 2 (10.0.0.1: 1 actor, 3 replies of 2 devices; "
        "10.0.0.2: 2 actors, 2 replies of 2 devices)")


def test_without_placements_there_is_no_ray_nodes_line(tmp_path: Path) -> None:
    """No simulation.json, or one with no Ray node, prints nothing."""
    assert ray_nodes_line(tmp_path) is None
    grid = AvailabilityGrid(FakeSimulationGrid(2), SimulationPlan(devices=2, data=("x",)),
                            tmp_path)
    grid.round_started(1)
    assert json.loads((tmp_path / "simulation.json").read_text())["ray_nodes"] == []
    assert ray_nodes_line(tmp_path) is None
