"""Fixtures for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_helpers import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Yield a place to start processes; all are killed at teardown."""
    f = Fleet(tmp_path)
    yield f
    f.close()
