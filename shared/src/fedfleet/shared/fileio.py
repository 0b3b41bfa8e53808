"""Small file helpers: a lock for read-modify-write, digests, lenient JSON reading.

Atomic writes are :mod:`fedfleet.shared.atomic`'s.

Kept free of numpy and TensorFlow except :func:`weights_digest`, which imports numpy
only when called, so light commands (``fedfleet models``, ``predict``) stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(arrays: Sequence[Any]) -> str:
    """Return a sha256 over the arrays' dtypes, shapes and values, in order.

    Two sides that hold the same weights get the same digest, whatever the file
    format they store them in.
    """
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(array)
        digest.update(f"{values.dtype.str}{values.shape};".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for a read-modify-write.

    Writers of the same index file in different processes take turns; readers need
    no lock because every write is an atomic replacement.
    """
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> Any:
    """Return the JSON value in ``path``, or None if the file is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
