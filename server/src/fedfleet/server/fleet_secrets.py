"""Everything a TLS + node-auth fleet needs, in one directory, one folder per service.

Layout (what each service mounts read-only):

    ca/ca.crt, ca/ca.key                  the private CA (never mounted anywhere)
    server/ca.crt, server.pem, server.key the server's certificate (server and gateway)
    server/authorized-keys/NAME.pub       device keys the server registers on start
    NAME/ca.crt, NAME/node.key(.pub)      one folder per demo client

Creating is idempotent: what exists is kept, what is missing is added.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.server.certs import create_certificates
from fedfleet.shared.keys import create_node_key


@dataclass
class FleetSecrets:
    """What :func:`create_fleet_secrets` made and what it kept."""

    root: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def create_fleet_secrets(root: Path, clients: Sequence[str], hosts: Sequence[str],
                         days: int = 365, owner: int | None = None) -> FleetSecrets:
    """Create the CA, server certificate and a node key per client under ``root``.

    ``owner``: a UID to hand the files to (when run as root for containers that run
    as another user).
    """
    result = FleetSecrets(root)
    ca_dir, server_dir = root / "ca", root / "server"
    if (server_dir / "server.pem").exists() and (ca_dir / "ca.crt").exists():
        result.kept.append(server_dir / "server.pem")
    else:
        paths = create_certificates(ca_dir, hosts, days=days, force=True)
        server_dir.mkdir(parents=True, exist_ok=True)
        os.replace(paths.server_cert, server_dir / "server.pem")
        os.replace(paths.server_key, server_dir / "server.key")
        result.created.append(server_dir / "server.pem")
    ca_cert = ca_dir / "ca.crt"
    for name in clients:
        client_dir = root / name
        key = client_dir / "node.key"
        if key.exists():
            result.kept.append(key)
        else:
            create_node_key(key)
            result.created.append(key)
        authorized = server_dir / "authorized-keys" / f"{name}.pub"
        authorized.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(client_dir / "node.key.pub", authorized)
    for folder in (server_dir, *(root / name for name in clients)):
        shutil.copyfile(ca_cert, folder / "ca.crt")
    if owner is not None:
        _chown_tree(root, owner)
    return result


def _chown_tree(root: Path, uid: int) -> None:
    """Give every file and folder under ``root`` (except the CA) to ``uid``."""
    for path in [root, *root.rglob("*")]:
        if "ca" in path.relative_to(root).parts[:1]:
            continue  # the CA key stays with whoever ran this (root in compose)
        os.chown(path, uid, uid)
