"""Device keys the server registers on start (``fedfleet server --authorized-keys``).

Every ``*.pub`` in the folder the server has not registered before goes to the
SuperLink over one Control API connection. The ledger (``authorized-keys.json`` in
the state dir) records each key registered, by fingerprint; it is written every
:data:`LEDGER_EVERY` keys and once more at the end, whatever happened, so a key
registered is never forgotten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedfleet.server.host.control import Control, Registration
from fedfleet.server.host.nodekeys import MAX_KEY_BYTES, NodeKey, inside
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError

LEDGER_EVERY = 200
"""Keys registered between two writes of the ledger."""

Progress = Callable[[int, int], None]
"""Called with (keys done, keys to do) as registration goes on."""


def fingerprint(path: Path) -> str:
    """Return the ledger's name for the key in ``path`` (its SHA-256, or its path)."""
    try:
        if path.is_file() and path.stat().st_size <= MAX_KEY_BYTES:
            return hashlib.sha256(path.read_bytes().strip()).hexdigest()
    except OSError:
        pass
    return f"unreadable:{path}"


def register_authorized_keys(control: Control, keys_dir: Path, state_dir: Path,
                             echo: Callable[[str], None] | None = None,
                             progress: Progress | None = None) -> list[str]:
    """Register every ``*.pub`` in ``keys_dir`` the server has not registered before.

    A key is registered once: after 'fedfleet nodes revoke' it stays out even though
    its file is still there (the file lists who may be registered, the SuperLink who
    is). Returns one line per key registered now (also passed to ``echo`` as it
    happens). Keys that cannot be registered do not stop the others.

    Raises
    ------
    FedfleetError
        After the others are registered, if a key cannot be (e.g. it is not an ECDSA
        OpenSSH public key): one line naming the file and the reason. Also if the
        SuperLink cannot be reached.
    """
    ledger_path = state_dir / "authorized-keys.json"
    ledger: dict[str, dict[str, Any]] = (
        json.loads(ledger_path.read_text(encoding="utf-8")) if ledger_path.exists() else {})
    todo: list[tuple[NodeKey, str]] = []
    seen: dict[str, Path] = {}
    for pub in sorted(keys_dir.glob("*.pub")):
        # a link out of the folder is never read, not even to fingerprint it
        mark = fingerprint(pub) if not pub.is_symlink() or inside(pub, keys_dir) \
            else f"outside:{pub}"
        if mark in ledger:
            continue
        if mark in seen:
            if echo is not None:
                echo(f"skipped {pub.stem}: the same key as {seen[mark].name}")
            continue
        seen[mark] = pub
        todo.append((NodeKey(pub, pub.stem, keys_dir), mark))
    marks = {key.path: mark for key, mark in todo}
    lines: list[str] = []
    refused: list[str] = []
    unsaved = 0

    def record(result: Registration) -> None:
        nonlocal unsaved
        if result.outcome == "refused":
            refused.append(result.error or str(result.key.path))
            line = f"cannot register {result.error}"
        else:
            name = result.key.name or result.key.path.stem
            ledger[marks[result.key.path]] = {"name": name, "node_id": result.node_id}
            unsaved += 1
            line = (f"registered {name}" + (f" as node {result.node_id}"
                                            if result.node_id else
                                            " (was registered already)"))
            lines.append(line)
            if unsaved >= LEDGER_EVERY:
                write_atomic(ledger_path, json.dumps(ledger, indent=1))
                unsaved = 0
        if echo is not None:
            echo(line)
        if progress is not None:
            progress(len(lines) + len(refused), len(todo))

    if progress is not None:
        progress(0, len(todo))
    try:
        control.register_nodes([key for key, _ in todo], on_result=record)
    finally:
        if unsaved:
            write_atomic(ledger_path, json.dumps(ledger, indent=1))
    if refused:
        more = f" (and {len(refused) - 1} more key(s), listed above)" \
            if len(refused) > 1 else ""
        raise FedfleetError(f"cannot register {refused[0]}{more}")
    return lines
