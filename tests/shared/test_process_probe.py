"""Reaching a TLS server: each misconfiguration gets its own explanation."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfleet.server.host.certs import CertificatePaths, create_certificates
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.process import probe


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's name
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(tls: CertificatePaths | None, host: str = "127.0.0.1"
           ) -> tuple[http.server.HTTPServer, int]:
    server = http.server.HTTPServer((host, 0), _Health)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.server_cert, tls.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def certs(tmp_path: Path) -> CertificatePaths:
    """Create a CA and a server certificate for loopback."""
    return create_certificates(tmp_path / "good", [])


@pytest.fixture
def tls_port(certs: CertificatePaths) -> Iterator[int]:
    """Serve a TLS health endpoint on 127.0.0.1; yield its port."""
    server, port = _serve(certs)
    yield port
    server.shutdown()


def test_right_ca_is_healthy(certs: CertificatePaths, tls_port: int) -> None:
    """The server's own CA verifies it."""
    assert probe(f"127.0.0.1:{tls_port}", True, certs.ca_cert) is None


def test_wrong_ca_fails_at_once_with_the_fix(tmp_path: Path, tls_port: int) -> None:
    """Another CA is a permanent error naming --root-certificates."""
    other = create_certificates(tmp_path / "other", [])
    with pytest.raises(FedfleetError, match="--root-certificates"):
        probe(f"127.0.0.1:{tls_port}", True, other.ca_cert)


def test_address_outside_the_certificate(certs: CertificatePaths) -> None:
    """An address the certificate does not name points to 'fedfleet certs --host'."""
    server, port = _serve(certs, host="127.0.0.2")  # loopback, but not in the SANs
    try:
        with pytest.raises(FedfleetError, match="fedfleet certs --host"):
            probe(f"127.0.0.2:{port}", True, certs.ca_cert)
    finally:
        server.shutdown()


def test_plaintext_client_is_told_about_tls(tls_port: int) -> None:
    """--insecure against a TLS server suggests --root-certificates."""
    reason = probe(f"127.0.0.1:{tls_port}", False, None)
    assert reason is not None and "--root-certificates" in reason


def test_tls_client_against_plain_server(certs: CertificatePaths) -> None:
    """TLS against a plain-HTTP server says the server runs --insecure."""
    server, port = _serve(None)
    try:
        reason = probe(f"127.0.0.1:{port}", True, certs.ca_cert)
    finally:
        server.shutdown()
    assert reason is not None and "--insecure" in reason
