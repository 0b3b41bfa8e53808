"""Share a bind-mounted output folder between the server's user and its host owner.

The server container runs as UID 49999; the host user who ran ``docker compose up``
must still be able to open, edit and delete what it writes, without sudo. Compose's
one-shot ``outputs-init`` (root, no network) runs this module on the mounted folder:

1. find the host user: ``FEDFLEET_OUTPUTS_OWNER`` (``uid[:gid]``) if set, else the
   owner of the folder, else the owner of a reference file (compose.yaml in the
   project directory: Docker creates a missing bind folder as root);
2. give the folder to that user, and give the server's UID access with a POSIX ACL;
3. add default ACL entries for both users, so everything the server creates inside
   (runs, checkpoints, plots) is readable, writable and removable by both; existing
   contents (earlier runs) get the same entries.

Nothing is made world-writable. On a file system without ACLs the folder is handed
to the server's UID (as before) and a warning says so.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF


def acl_bytes(mode: int, users: Iterable[int], owner: int, named_perm: int) -> bytes:
    """Return a Linux POSIX ACL xattr value: the mode's entries plus named users.

    ``users`` get ``named_perm`` (a 3-bit rwx value); the owner's own uid is skipped.
    """
    named = sorted({u for u in users if u != owner})
    entries = [(_USER_OBJ, (mode >> 6) & 7, _UNDEFINED)]
    entries += [(_USER, named_perm, uid) for uid in named]
    entries.append((_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED))
    if named:
        entries.append((_MASK, named_perm | (mode >> 3) & 7, _UNDEFINED))
    entries.append((_OTHER, mode & 7, _UNDEFINED))
    return struct.pack("<I", _VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries)


def parse_owner(text: str) -> tuple[int, int]:
    """Parse ``uid`` or ``uid:gid`` (the gid defaults to the uid).

    Raises
    ------
    ValueError
        If it is not one or two non-negative integers.
    """
    uid, _, gid = text.strip().partition(":")
    values = (int(uid), int(gid or uid))
    if min(values) < 0:
        raise ValueError(f"{text!r}: uid and gid must be >= 0")
    return values


def host_owner(folder: Path, references: Iterable[Path], override: str = ""
               ) -> tuple[int, int] | None:
    """Return the (uid, gid) that should own ``folder``, or None if only root is seen."""
    if override:
        return parse_owner(override)
    for path in (folder, *references):
        try:
            info = path.stat()
        except OSError:
            continue
        if info.st_uid != 0:
            return info.st_uid, info.st_gid
    return None


def _set(path: Path, users: list[int], is_dir: bool) -> None:
    info = path.lstat()
    perm = 7 if is_dir or info.st_mode & 0o111 else 6
    os.setxattr(path, ACL_ACCESS, acl_bytes(info.st_mode, users, info.st_uid, perm),
                follow_symlinks=False)
    if is_dir:
        os.setxattr(path, ACL_DEFAULT, acl_bytes(0o775, users, _UNDEFINED, 7),
                    follow_symlinks=False)


def share(folder: Path, server_uid: int, owner: tuple[int, int] | None) -> str:
    """Make ``folder`` and what it holds usable by ``server_uid`` and ``owner``.

    Returns a sentence describing what was done.

    Raises
    ------
    OSError
        With ``EOPNOTSUPP`` if the file system has no POSIX ACLs.
    """
    users = [server_uid] + ([owner[0]] if owner else [])
    if owner is not None:
        os.chown(folder, owner[0], owner[1], follow_symlinks=False)
    else:
        os.chown(folder, server_uid, server_uid, follow_symlinks=False)
    _set(folder, users, True)
    for root, dirs, files in os.walk(folder):  # symlinks are neither followed nor changed
        for name in dirs:
            if not (Path(root) / name).is_symlink():
                _set(Path(root) / name, users, True)
        for name in files:
            path = Path(root) / name
            if stat.S_ISREG(path.lstat().st_mode):
                _set(path, users, False)
    who = f"UID {owner[0]} (host owner)" if owner else f"UID {server_uid} (no host owner "\
          "found: only root owns the folder and compose.yaml)"
    return f"{folder}: owned by {who}; the server (UID {server_uid}) writes through an ACL"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fedfleet.server.host.outputs_access FOLDER``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--server-uid", type=int, default=49999)
    parser.add_argument("--reference", type=Path, action="append", default=[],
                        help="A host file whose owner is the host user (repeatable).")
    args = parser.parse_args(argv)
    try:
        owner = host_owner(args.folder, args.reference,
                           os.environ.get("FEDFLEET_OUTPUTS_OWNER", ""))
    except ValueError as err:
        print(f"outputs-init: FEDFLEET_OUTPUTS_OWNER {err}", file=sys.stderr)
        return 2
    try:
        print(f"outputs-init: {share(args.folder, args.server_uid, owner)}")
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        os.chown(args.folder, args.server_uid, args.server_uid)
        print(f"outputs-init: WARNING: {args.folder} is on a file system without POSIX "
              f"ACLs; its files will belong to UID {args.server_uid}. Remove them with "
              "'docker compose run --rm --entrypoint rm outputs-init -rf /app/outputs/"
              "run-<id>' or sudo.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
