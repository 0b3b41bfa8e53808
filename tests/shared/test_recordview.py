"""The run-record reader turns whatever metrics.json holds into usable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.recordview import (
    RecordView,
    contributors,
    failures,
    load_record,
    number,
    rejected,
    timeouts,
)


def test_numbers_are_finite_floats_only() -> None:
    """Booleans, text, NaN and infinities are not numbers."""
    assert [number(v) for v in (1, 0.5, True, "1", float("nan"), float("inf"), None)] == \
        [1.0, 0.5, None, None, None, None, None]


def test_rows_are_ordered_and_junk_skipped() -> None:
    """Rows without an integer round are dropped; the rest ordered by round."""
    record = RecordView({"rounds": [{"round": 3}, "x", {"round": 1}, {"round": "2"},
                                   {"round": True}, None]})
    assert [r["round"] for r in record.rounds] == [1, 3]
    assert record.last_round == 3 and record.row(2) is None


def test_counts_from_either_shape_of_record() -> None:
    """Rejections, timeouts and failures from counters or from the error list."""
    errors = [{"phase": "train", "node_id": "1", "kind": "rejected",
               "error": "rejected: too far"},
              {"phase": "train", "node_id": "2", "kind": "deadline",
               "error": "no reply by the deadline"},
              {"phase": "train", "node_id": "3", "kind": "error", "error": "ValueError: boom"}]
    row = {"errors": errors, "train_failures": 3}
    assert (rejected(row), timeouts(row), failures(row)) == (1, 1, 1)
    old = [{"phase": "train", "node_id": "2", "error": "no reply before the round timeout"}]
    assert timeouts({"errors": old}) == 1  # an older record without kinds
    assert timeouts({"no_reply": 2, "errors": []}) == 2
    assert rejected({"rejected_replies": "lots"}) == 0


def test_contributors_exclude_failed_and_rejected_nodes() -> None:
    """Accepted train replies have a weight in the average; a train error puts a node out."""
    row = {"clients": [{"node_id": 1, "weight": 3.0}, {"node_id": "2", "device": {}},
                       {"node_id": "3", "weight": 4.0}],
           "errors": [{"phase": "train", "node_id": "3", "error": "rejected: x"}]}
    assert contributors(row) == ["1"]


def test_a_folder_without_a_record_is_a_clear_error(tmp_path: Path) -> None:
    """Missing or corrupt metrics.json names the folder."""
    with pytest.raises(FedfleetError, match="does not exist"):
        load_record(tmp_path / "nope")
    (tmp_path / "metrics.json").write_text("{half")
    with pytest.raises(FedfleetError, match="has no readable metrics.json"):
        load_record(tmp_path)
