"""Tests of the benchmarks' helpers: ``benchmarks/`` on the import path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
