"""A private CA and the server's TLS certificate, made with the ``cryptography`` library."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfleet.shared.atomic import PUBLIC, write_atomic
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.secrets import write_private

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1", "server")
"""Always in the server certificate: loopback, and the compose service name."""

FILES = ("ca.crt", "ca.key", "server.pem", "server.key")


@dataclass(frozen=True)
class CertificatePaths:
    """Where ``create_certificates`` wrote its files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop repeats
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_certificates(out: Path, hosts: Sequence[str], days: int = 365,
                        force: bool = False, defaults: bool = True) -> CertificatePaths:
    """Create a CA and a server certificate for ``hosts`` (plus the defaults) in ``out``.

    ``defaults=False`` leaves out loopback and 'server' (tests of name mismatches).

    Raises
    ------
    ConfigError
        If any of the files exists and ``force`` is not set (nothing is written then).
    """
    paths = CertificatePaths(*(out / name for name in FILES))
    existing = [p for p in (paths.ca_cert, paths.ca_key, paths.server_cert,
                            paths.server_key) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; pass --force to replace the "
                          "certificates (devices then need the new ca.crt)")
    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=days)
    # Valid from a day ago: a device whose clock runs behind must still accept it.
    since = now - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedfleet CA")).issuer_name(_name("fedfleet CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(since).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    all_hosts = [*hosts, *(DEFAULT_HOSTS if defaults else ())]
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(all_hosts[0])).issuer_name(ca_cert.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(since).not_valid_after(until)
        .add_extension(_san(all_hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    write_private(paths.ca_key, _pem_key(ca_key), force=True)
    write_private(paths.server_key, _pem_key(server_key), force=True)
    for path, cert in ((paths.ca_cert, ca_cert), (paths.server_cert, server_cert)):
        write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    return paths
