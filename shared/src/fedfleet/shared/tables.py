"""The command line's tables: every command that lists rows prints them through here."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def columns(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return ``rows`` under ``header`` in left-aligned columns as wide as their text."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True))
                     .rstrip() for line in [header, *rows])


def rows_text(rows: Sequence[Mapping[str, Any]], format: str, header: str,
              line: Callable[[Mapping[str, Any]], str]) -> str:
    """Return ``rows`` as JSON, or as a table: ``header`` then one ``line`` per row."""
    if format == "json":
        return json.dumps(rows, indent=1)
    return "\n".join([header, *(line(row) for row in rows)])
