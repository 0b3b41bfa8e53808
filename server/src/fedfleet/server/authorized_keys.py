"""Device keys the server registers on start (``fedfleet server --authorized-keys``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedfleet.server.control import Control
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError


def register_authorized_keys(control: Control, keys_dir: Path, state_dir: Path
                             ) -> list[str]:
    """Register every ``*.pub`` in ``keys_dir`` the server has not registered before.

    A key is registered once: after 'fedfleet nodes revoke' it stays out even though
    its file is still there (the file lists who may be registered, the SuperLink who
    is). Returns one line per key registered now.

    Raises
    ------
    FedfleetError
        If a key cannot be registered (e.g. it is not an ECDSA OpenSSH public key).
    """
    ledger_path = state_dir / "authorized-keys.json"
    ledger: dict[str, dict[str, Any]] = (
        json.loads(ledger_path.read_text(encoding="utf-8")) if ledger_path.exists() else {})
    lines = []
    for pub in sorted(keys_dir.glob("*.pub")):
        fingerprint = hashlib.sha256(pub.read_bytes().strip()).hexdigest()
        if fingerprint in ledger:
            continue
        try:
            node_id: int | None = control.register_node(pub, pub.stem)
        except FedfleetError as err:
            if "already in use" not in str(err):
                raise FedfleetError(f"cannot register {pub}: {err}") from None
            node_id = None  # registered by hand before
        ledger[fingerprint] = {"name": pub.stem, "node_id": node_id}
        write_atomic(ledger_path, json.dumps(ledger, indent=1))
        lines.append(f"registered {pub.stem}"
                     + (f" as node {node_id}" if node_id else " (was registered already)"))
    return lines
