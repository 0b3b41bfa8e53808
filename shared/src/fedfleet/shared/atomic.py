"""Write files atomically, never through a planted symlink, with the mode set first.

Every file fedfleet writes (keys, certificates, metrics, checkpoints, strategy state,
the key ledger) goes through here:

- the data goes to a temporary file in the target's folder, created by
  :func:`tempfile.mkstemp` (unpredictable name, ``O_EXCL``: a file or symlink planted
  at any name is never opened) or, for libraries that write by name (Keras,
  ``np.savez``), inside a fresh private folder from :func:`tempfile.mkdtemp`;
- its mode is set on the open file (``fchmod``) before a byte is written, and the
  data is flushed to disk;
- ``os.replace`` then swaps it in: a symlink at the target is replaced, not followed;
  with ``exclusive`` the file is linked in only if nothing (not even a dangling
  symlink) is at the target;
- on any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fedfleet.shared.errors import ConfigError

PUBLIC = 0o644
PRIVATE = 0o600


def write_atomic(path: Path, data: bytes | str, mode: int = PUBLIC,
                 exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with ``mode`` (see the module docstring).

    Raises
    ------
    ConfigError
        With ``exclusive``, if something already exists at ``path``.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        _swap_in(Path(tmp), path, exclusive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(path: Path, save: Callable[[Path], object], mode: int = PUBLIC) -> None:
    """Have ``save(tmp_path)`` write the file, then move it to ``path`` with ``mode``.

    For libraries that only write to a file name: ``tmp_path`` lies in a new private
    folder (mode 0700, unpredictable name) next to ``path`` and has ``path``'s name.
    """
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=".tmp"))
    try:
        tmp = folder / path.name
        save(tmp)
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        _swap_in(tmp, path, exclusive=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_atomic(source: Path, path: Path, mode: int = PUBLIC) -> None:
    """Copy ``source``'s bytes to ``path`` atomically (never through a symlink there)."""
    write_atomic(path, source.read_bytes(), mode)


def _swap_in(tmp: Path, path: Path, exclusive: bool) -> None:
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)  # fails if anything is at path
    except FileExistsError:
        raise ConfigError(f"{path} already exists; pass --force to replace it") from None
    finally:
        tmp.unlink(missing_ok=True)
