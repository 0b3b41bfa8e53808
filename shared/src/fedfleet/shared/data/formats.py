"""The sample files a dataset and ``fedfleet predict`` both read: CSV rows and .npz arrays.

One parser for both, so a file that trains also predicts, with the same error texts.
No TensorFlow here (``fedfleet predict`` runs without it).
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedfleet.shared.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
"""Image files, by suffix (a class folder's, or ``fedfleet predict``'s inputs)."""


@dataclass(frozen=True)
class CsvSamples:
    """A CSV file's samples: features ``x`` (float32), labels and line numbers."""

    x: np.ndarray
    labels: list[str]  # the label column's values, stripped (empty without one)
    lines: list[int]  # each sample's line in the file (the header is line 1)


def read_csv_rows(path: Path) -> list[list[str]]:
    """Return the rows of the CSV file ``path`` (at least the header).

    Raises
    ------
    DataError
        If the file cannot be read as UTF-8 CSV or is empty.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from err
    if not rows:
        raise DataError(f"{path}: the file is empty")
    return rows


def read_csv_samples(path: Path, label_column: str, labelled: bool) -> CsvSamples:
    """Return the samples in the CSV file ``path``: every column but ``label_column``.

    Parameters
    ----------
    path
        The file; its first row is the header, blank rows are skipped.
    label_column
        The column that holds the labels.
    labelled
        Whether every row must have a label (training data); otherwise the label
        column is optional and only left out of the features.

    Raises
    ------
    DataError
        Naming the line of a row that cannot be used.
    """
    rows = read_csv_rows(path)
    header = rows[0]
    if labelled and label_column not in header:
        raise DataError(
            f"{path}: no label column {label_column!r} (columns: {', '.join(header)}); "
            "name the label column with --label-column"
        )
    col = header.index(label_column) if label_column in header else -1
    features: list[list[float]] = []
    labels: list[str] = []
    lines: list[int] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
        if labelled:
            label = row[col].strip()
            if not label:
                raise DataError(f"{path}:{line_no}: missing label")
            labels.append(label)
        try:
            features.append([float(v) for i, v in enumerate(row) if i != col])
        except ValueError as err:
            raise DataError(f"{path}:{line_no}: non-numeric feature ({err})") from err
        lines.append(line_no)
    if not features:
        raise DataError(f"{path}: no data rows")
    return CsvSamples(np.asarray(features, dtype=np.float32), labels, lines)


def read_npz(path: Path, choices: Sequence[tuple[str, ...]]) -> tuple[np.ndarray, ...]:
    """Return the arrays of the first of ``choices`` (tuples of names) that ``path`` has.

    Raises
    ------
    DataError
        If the file is not a readable .npz or has none of ``choices``, naming what it has.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            for names in choices:
                if set(names) <= keys:
                    return tuple(data[name] for name in names)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from err
    first, *others = (" and ".join(f"'{n}'" for n in names) for names in choices)
    plural = "s" if len(choices[0]) > 1 else ""
    alternatives = f" (or {', '.join(others)})" if others else ""
    raise DataError(f"{path}: expected array{plural} {first}{alternatives}, "
                    f"found {sorted(keys) or 'none'}")


def as_samples(x: np.ndarray, source: object) -> np.ndarray:
    """Return ``x`` as float32, integer pixels scaled to [0, 1].

    Raises
    ------
    DataError
        If ``x`` does not hold numbers.
    """
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{source}: samples are {x.dtype}, not numbers")
    integer_pixels = np.issubdtype(x.dtype, np.integer)
    x = x.astype(np.float32)
    if integer_pixels:
        x /= 255.0
    return x
