"""Writing secrets (private keys) so that only their owner can read them."""

from __future__ import annotations

from pathlib import Path

from fedfleet.shared.atomic import PRIVATE, write_atomic


def write_private(path: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` with mode 0600; never replace an existing file unless ``force``.

    Written atomically and never through a symlink (:mod:`fedfleet.shared.atomic`).

    Raises
    ------
    ConfigError
        If something exists at ``path`` and ``force`` is not set.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, PRIVATE, exclusive=not force)
