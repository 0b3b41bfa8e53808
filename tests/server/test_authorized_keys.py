"""Device keys the server registers on start: each once, bad ones named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedfleet.server.authorized_keys import register_authorized_keys
from fedfleet.shared.errors import FedfleetError


class FakeControl:
    """Stands in for the Control API: remembers registered keys."""

    def __init__(self, known: set[bytes] | None = None) -> None:
        self.known = known or set()
        self.calls: list[str] = []

    def register_node(self, public_key: Path, name: str | None = None) -> int:
        self.calls.append(str(name))
        if public_key.read_bytes() in self.known:
            raise FedfleetError("flwr supernode failed: Public key already in use.")
        if b"ecdsa" not in public_key.read_bytes():
            raise FedfleetError("flwr supernode failed: invalid public key")
        self.known.add(public_key.read_bytes())
        return 1000 + len(self.known)


def test_authorized_keys_are_registered_once(tmp_path: Path) -> None:
    """A key revoked after its first registration is not registered again on restart."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "edge-1.pub").write_text("ecdsa-sha2-nistp384 AAAA1\n")
    (keys / "edge-2.pub").write_text("ecdsa-sha2-nistp384 AAAA2\n")
    control: Any = FakeControl({b"ecdsa-sha2-nistp384 AAAA2\n"})
    lines = register_authorized_keys(control, keys, tmp_path)
    assert lines == ["registered edge-1 as node 1002",
                     "registered edge-2 (was registered already)"]
    control.known.clear()  # as if both were revoked
    assert register_authorized_keys(control, keys, tmp_path) == []
    assert control.calls == ["edge-1", "edge-2"]


def test_a_bad_authorized_key_names_the_file(tmp_path: Path) -> None:
    """A file that is not a key fails with its path."""
    (tmp_path / "bad.pub").write_text("ssh-ed25519 AAAA\n")
    with pytest.raises(FedfleetError, match="cannot register .*bad.pub"):
        register_authorized_keys(FakeControl(), tmp_path, tmp_path)  # type: ignore[arg-type]
