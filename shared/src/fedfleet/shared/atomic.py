"""Write files atomically, never through a planted symlink, with the mode set first.

Every file fedfleet writes (keys, certificates, metrics, checkpoints, strategy state,
the key ledger) goes through here:

- the data goes to a temporary file in the target's folder with an unpredictable name,
  created with ``O_EXCL | O_NOFOLLOW`` (a file or symlink planted at any name is never
  opened) or, for libraries that write by name (Keras, ``np.savez``, matplotlib),
  inside a fresh private folder from :func:`tempfile.mkdtemp`;
- a file gets the permissions any new file of the process gets (the umask, or the
  folder's default ACL: how compose shares ``./outputs`` with the host user), unless a
  ``mode`` is given (``PRIVATE`` for keys): then it is set on the open file
  (``fchmod``) before a byte is written; the data is flushed to disk;
- ``os.replace`` then swaps it in: a symlink at the target is replaced, not followed;
  with ``exclusive`` the file is linked in only if nothing (not even a dangling
  symlink) is at the target;
- on any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fedfleet.shared.errors import ConfigError

PUBLIC = 0o644
PRIVATE = 0o600


def _new_temp(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new file next to ``path``; return its open descriptor and name."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"no free temporary name next to {path}")


def write_atomic(path: Path, data: bytes | str, mode: int | None = None,
                 exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (see the module docstring); ``mode`` if given.

    Raises
    ------
    ConfigError
        With ``exclusive``, if something already exists at ``path``.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _new_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        _swap_in(Path(tmp), path, exclusive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(path: Path, save: Callable[[Path], object], mode: int | None = None
                ) -> None:
    """Have ``save(tmp_path)`` write the file, then move it to ``path``.

    For libraries that only write to a file name: ``tmp_path`` lies in a new private
    folder (mode 0700, unpredictable name) next to ``path`` and has ``path``'s name.
    ``save`` may also make a folder there (a SavedModel); it is moved in the same way
    (``mode`` applies to files only).
    """
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=".tmp"))
    try:
        tmp = folder / path.name
        save(tmp)
        if not tmp.is_dir():
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                if mode is not None:
                    os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
        _swap_in(tmp, path, exclusive=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_temp_dir(path: Path, suffix: str = ".tmp") -> Path:
    """Create a new, empty folder next to ``path`` with an unpredictable name.

    It gets the usual permissions (umask or default ACL), so a folder built in it can be
    moved into place as it is; the caller removes it.
    """
    for _ in range(100):
        folder = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
        try:
            folder.mkdir(0o777)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free temporary name next to {path}")


def write_json_atomic(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_atomic(path, json.dumps(value, indent=1, default=float) + "\n")


def copy_atomic(source: Path, path: Path, mode: int | None = None) -> None:
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
