"""'fedfleet secrets': the CA, certificate and node keys of a compose fleet."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from fedfleet.server.fleet_secrets import create_fleet_secrets


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
