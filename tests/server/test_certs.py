"""Certificates from 'fedfleet certs': SANs, chain, permissions, no silent overwrite."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from fedfleet.server.host.certs import create_certificates
from fedfleet.shared.cli import cli
from fedfleet.shared.errors import ConfigError


def test_server_certificate_covers_the_named_hosts(tmp_path: Path) -> None:
    """SANs hold the given names and IPs plus loopback and the compose service."""
    paths = create_certificates(tmp_path, ["fl.example.org", "192.168.1.10"])
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"fl.example.org", "localhost",
                                                          "server"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.168.1.10"), ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1")}
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)


def test_keys_are_owner_only_and_load_into_tls(tmp_path: Path) -> None:
    """Private keys are mode 600 and pair with their certificates."""
    paths = create_certificates(tmp_path, [])
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths.server_cert, paths.server_key)


def test_existing_certificates_are_not_replaced_without_force(tmp_path: Path) -> None:
    """A second run refuses and leaves the first files untouched; --force replaces."""
    paths = create_certificates(tmp_path, [])
    before = paths.ca_cert.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        create_certificates(tmp_path, [])
    assert paths.ca_cert.read_bytes() == before
    create_certificates(tmp_path, [], force=True)
    assert paths.ca_cert.read_bytes() != before


def test_certs_command(tmp_path: Path) -> None:
    """The command writes the four files and refuses to overwrite them."""
    runner = CliRunner()
    result = runner.invoke(cli, ["certs", "--out", str(tmp_path), "--host", "edge.lan"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt", "ca.key", "server.key", "server.pem"]
    again = runner.invoke(cli, ["certs", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
