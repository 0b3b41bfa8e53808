"""'fedfleet secrets' for compose, and registering authorized keys once."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fedfleet.server.fleet_secrets import create_fleet_secrets
from fedfleet.server.service import register_authorized_keys
from fedfleet.shared.errors import FedfleetError


def test_each_service_gets_only_its_own_secrets(tmp_path: Path) -> None:
    """server/ has the server key and the devices' public keys; a client only its key."""
    create_fleet_secrets(tmp_path, ["client-1", "client-2"], ["gateway"])
    assert sorted(p.name for p in (tmp_path / "client-1").iterdir()) == [
        "ca.crt", "node.key", "node.key.pub"]
    assert sorted(p.name for p in (tmp_path / "server").iterdir()) == [
        "authorized-keys", "ca.crt", "server.key", "server.pem"]
    assert sorted(p.name for p in (tmp_path / "server" / "authorized-keys").iterdir()) == [
        "client-1.pub", "client-2.pub"]
    for key in (tmp_path / "server" / "server.key", tmp_path / "client-1" / "node.key",
                tmp_path / "ca" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    cert = x509.load_pem_x509_certificate((tmp_path / "server" / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "client-2" / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"gateway", "server"} <= set(san.get_values_for_type(x509.DNSName))


def test_a_second_run_keeps_everything_and_adds_new_clients(tmp_path: Path) -> None:
    """Running on every start never replaces a key or the certificate."""
    create_fleet_secrets(tmp_path, ["client-1"], [])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    made = create_fleet_secrets(tmp_path, ["client-1", "client-2"], [])
    assert made.created == [tmp_path / "client-2" / "node.key"]
    for path, content in before.items():
        assert path.read_bytes() == content, path


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
