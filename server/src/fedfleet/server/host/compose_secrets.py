"""Everything a TLS + node-auth fleet needs, in one directory, one folder per service.

Layout (what each service mounts read-only):

    ca/ca.crt, ca/ca.key                  the private CA (never mounted anywhere)
    server/ca.crt, server.pem, server.key the server's certificate (server and gateway)
    server/authorized-keys/NAME.pub       device keys the server registers on start
    NAME/ca.crt, NAME/node.key(.pub)      one folder per demo client

Creating is idempotent: what exists is kept, what is missing is added.

Who may touch what (``group``, e.g. 49999, the containers' user and group): the
whole tree stays owned by the owner of the folder (the user who made it, or root when
Docker made it for compose's ``secrets-init``; never the containers' user).
``ca/`` is private to that owner (0700, key 0600). Each service folder and its files
belong to ``group`` read-only (folders 0750, files 0640): a container reads its
certificate and keys through the group, but cannot create, replace or rename
anything (the folders are not group-writable), so it cannot plant a CA, a key or a
symlink that the next ``secrets-init`` would trust. Without ``group`` the service
files stay with the owner (keys 0600, the rest 0644). Symlinks found anywhere in the
tree are removed, never followed, before anything is read or written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.server.host.certs import create_certificates
from fedfleet.shared.atomic import copy_atomic
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.keys import create_node_key

PRIVATE_FILES = ("ca.key", "server.key", "node.key")


@dataclass
class FleetSecrets:
    """What :func:`create_fleet_secrets` made and what it kept."""

    root: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def create_fleet_secrets(root: Path, clients: Sequence[str], hosts: Sequence[str],
                         days: int = 365, group: int | None = None) -> FleetSecrets:
    """Create the CA, server certificate and a node key per client under ``root``.

    ``group``: a GID that may read (never write) the service folders (see the module
    docstring), for containers that run as another user.

    Raises
    ------
    ConfigError
        If the files cannot be given to ``group`` (run as root, or without it).
    """
    result = FleetSecrets(root)
    root.mkdir(parents=True, exist_ok=True)
    result.removed += _settle(root, group)  # before anything in the tree is trusted
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
        copy_atomic(client_dir / "node.key.pub", authorized)
    for folder in (server_dir, *(root / name for name in clients)):
        copy_atomic(ca_cert, folder / "ca.crt")
    _settle(root, group)
    return result


def _settle(root: Path, group: int | None) -> list[Path]:
    """Remove symlinks and set owners and modes in ``root`` (module docstring).

    Walks top-down and fixes each folder before looking inside it, so once a folder
    is done nobody else can change what is in it. Returns the symlinks removed.
    """
    uid, gid = _keeper(root, group)
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinks
        here = Path(dirpath)
        top = here.relative_to(root).parts[:1]
        shared = group is not None and here != root and top != ("ca",)
        owner_gid = group if shared and group is not None else gid
        _own(here, uid, owner_gid, 0o750 if shared else 0o700 if top == ("ca",)
             else 0o755)
        for name in [*dirnames, *filenames]:
            path = here / name
            if path.is_symlink():
                path.unlink()
                removed.append(path)
                if name in dirnames:
                    dirnames.remove(name)
            elif name in filenames:
                private = name in PRIVATE_FILES or top == ("ca",) and name != "ca.crt"
                mode = 0o640 if shared else 0o600 if private else 0o644
                _own(path, uid, owner_gid, mode)
    return removed


def _keeper(root: Path, group: int | None) -> tuple[int, int]:
    """Return who keeps the tree: the owner of ``root`` (e.g. the user who made it).

    Not root: whoever runs this. The containers' user (an older fedfleet gave the
    tree to it) is never the keeper: root takes the tree back then.
    """
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    info = root.stat()
    if group is not None and group in (info.st_uid, info.st_gid):
        return 0, 0
    return info.st_uid, info.st_gid


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    try:
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    except PermissionError as err:
        raise ConfigError(f"cannot give {path} to group {gid} ({err.strerror}): run "
                          "'fedfleet secrets' as root (compose's secrets-init does), or "
                          "without --group") from None
