"""Checks a device runs before joining: server, TLS, node key, clock, data."""

from __future__ import annotations

import email.utils
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fedfleet.client.nodedata import NodeData
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.process import health_url, probe

MAX_CLOCK_AHEAD_S = 4.0
"""Flower refuses signed requests from clocks more than ~5 s ahead of the server."""


@dataclass(frozen=True)
class Check:
    """One check's outcome, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_server(server: str, insecure: bool, ca: Path | None) -> Check:
    """Check the server answers and its certificate verifies for this address."""
    try:
        reason = probe(server, not insecure, ca)
    except FedfleetError as err:
        return Check("server", False, str(err), "see the message above")
    if reason is None:
        mode = "plain HTTP" if insecure else "TLS, certificate verified for this address"
        return Check("server", True, f"{server} answers ({mode})")
    return Check("server", False, f"{server}: {reason}",
                 "check the address, that the server runs and that the port is open")


def check_clock(server: str, insecure: bool, ca: Path | None) -> Check:
    """Check this clock is within Flower's tolerance of the server's (Date header)."""
    context = None if insecure else ssl.create_default_context(
        cafile=str(ca) if ca else None)
    try:
        with urllib.request.urlopen(health_url(server, not insecure), timeout=5,
                                    context=context) as response:
            stamp = response.headers.get("Date")
    except (urllib.error.URLError, OSError) as err:
        return Check("clock", False, f"cannot read the server's time ({err})",
                     "fix the server check first")
    if not stamp:
        return Check("clock", False, "the server sent no Date header", "")
    ahead = time.time() - email.utils.parsedate_to_datetime(stamp).timestamp()
    if ahead > MAX_CLOCK_AHEAD_S:
        return Check("clock", False, f"this clock is {ahead:.0f} s ahead of the server's",
                     "enable NTP (timedatectl set-ntp true); Flower refuses requests "
                     "from clocks more than ~5 s ahead")
    return Check("clock", True, f"offset {ahead:+.0f} s (1 s resolution)")


def check_node_key(path: Path | None) -> Check:
    """Check the node key, if any, is an ECDSA key in OpenSSH form."""
    if path is None:
        return Check("node key", True, "none given (fine for servers without --node-auth)")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        return Check("node key", False, f"{path}: {err}",
                     "create one with 'fedfleet node-key'")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return Check("node key", False, f"{path} is not an ECDSA key",
                     "create one with 'fedfleet node-key'")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return Check("node key", True, f"{path}; the operator must have registered "
                                   f"{public[:40]}...")


def check_data(node: NodeData) -> Check:
    """Check the device's data loads."""
    from fedfleet.client.node import check_data as load_check

    try:
        return Check("data", True, load_check(node))
    except FedfleetError as err:
        return Check("data", False, str(err), "fix the data or the --data path")


def run_checks(server: str, insecure: bool, ca: Path | None, node_key: Path | None,
               node: NodeData) -> list[Check]:
    """Run every check and return the outcomes in order."""
    return [check_server(server, insecure, ca), check_clock(server, insecure, ca),
            check_node_key(node_key), check_data(node)]
