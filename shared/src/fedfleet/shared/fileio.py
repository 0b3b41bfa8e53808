"""Small file helpers: atomic replacement, a lock for read-modify-write, digests.

Kept free of numpy and TensorFlow except :func:`weights_digest`, which imports numpy
only when called, so light commands (``fedfleet models``, ``predict``) stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
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


def temp_path(target: Path, suffix: str = ".tmp") -> Path:
    """Create an empty, new temporary file next to ``target`` (same file system).

    Unlike ``tempfile.mkstemp`` (mode 600), the file gets the usual permissions
    (0666 less the umask, or the folder's default ACL), so a file moved into place
    is as readable as any other the process writes.
    """
    for _ in range(100):
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name next to {target}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one."""
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=1, default=float) + "\n")


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
