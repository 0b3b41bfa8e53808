"""Writing secrets (private keys) so that only their owner can read them."""

from __future__ import annotations

import os
from pathlib import Path

from fedfleet.shared.errors import ConfigError


def write_private(path: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` with mode 0600; never replace an existing file unless ``force``.

    Raises
    ------
    ConfigError
        If ``path`` exists and ``force`` is not set.
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
