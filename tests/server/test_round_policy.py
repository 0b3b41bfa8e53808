"""The round policy: a bounded wait for clients, when clients evaluate, when a run ends."""

from __future__ import annotations

import pytest
from fakegrid import NodeGrid

from fedfleet.server.run.round_policy import RoundPolicy
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.runrecord import RoundRow
from fedfleet.shared.settings import RunSettings


def test_waiting_for_clients_is_bounded() -> None:
    """Too few clients is an error after the timeout, not an endless wait."""
    assert RoundPolicy(min_clients=3, client_wait_timeout=1).wait_for_clients(
        NodeGrid([1, 2, 3])) == 3
    with pytest.raises(FedfleetError, match="only 1 of the 3 clients needed were "
                       "connected after 0s; start more clients or lower --min-clients"):
        RoundPolicy(min_clients=3, client_wait_timeout=0.5).wait_for_clients(NodeGrid([1]))


def test_the_policy_comes_from_the_run_settings() -> None:
    policy = RoundPolicy.from_settings(RunSettings(
        num_rounds=7, min_clients=4, min_replies=2, client_wait_timeout=9,
        client_eval="separate"))
    assert policy == RoundPolicy(7, 4, 9.0, 2, "separate")
    assert RoundPolicy() == RoundPolicy.from_settings(RunSettings())


@pytest.mark.parametrize(("mode", "run_round", "replies", "expected"), [
    ("with-train", 3, 2, False),   # the next train message carries the evaluation
    ("with-train", 5, 2, True),    # the last model gets its own evaluate message
    ("separate", 3, 2, True),
    ("separate", 3, 0, False),     # nobody trained: nothing new to evaluate
])
def test_when_clients_evaluate(mode: str, run_round: int, replies: int,
                               expected: bool) -> None:
    policy = RoundPolicy(num_rounds=5, client_eval=mode)
    assert policy.evaluate_on_clients(run_round, replies) is expected


def test_a_round_with_enough_replies_goes_on() -> None:
    policy = RoundPolicy(min_replies=2)
    assert policy.can_aggregate(2) and not policy.can_aggregate(1)
    policy.check({"round": 4, "train_replies": 2, "errors": []})


def test_a_round_without_usable_replies_ends_the_run_with_every_reason() -> None:
    row: RoundRow = {"round": 4, "train_replies": 0, "errors": [
        {"phase": "train", "node_id": "7", "kind": "deadline",
         "error": "no reply by the deadline"},
        {"phase": "train", "node_id": "8", "kind": "rejected", "error": "rejected: NaN"}]}
    with pytest.raises(FedfleetError, match="no client could train in round 4: node 7: "
                       "no reply by the deadline; node 8: rejected: NaN"):
        RoundPolicy().check(row)
    with pytest.raises(FedfleetError, match="no replies before the round timeout"):
        RoundPolicy().check({"round": 1, "train_replies": 0, "errors": []})


def test_many_devices_with_one_reason_make_one_short_line() -> None:
    errors = [{"phase": "train", "node_id": str(n), "kind": "deadline",
               "error": "no reply by the deadline"} for n in range(1, 99)]
    errors.append({"phase": "train", "node_id": "500", "kind": "rejected",
                   "error": "rejected: NaN"})
    with pytest.raises(FedfleetError) as caught:
        RoundPolicy().check({"round": 2, "train_replies": 0, "errors": errors})
    message = str(caught.value)
    assert message == ("no client could train in round 2: 98 devices (node 1, node 2, "
                       "node 3 and 95 more): no reply by the deadline; node 500: "
                       "rejected: NaN")
    assert "node 4," not in message and "\n" not in message
