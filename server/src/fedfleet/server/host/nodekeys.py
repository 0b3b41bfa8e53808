"""Device public-key files: which files a path names, and each one read and checked.

A key file holds one OpenSSH ECDSA public key on a NIST curve (what ``fedfleet
node-key`` writes and Flower's node authentication accepts). It is checked here, before
anything is sent to the SuperLink, and every problem is one line naming the file.

A directory of keys is its ``*.pub`` files, sorted. A symbolic link in it is followed
only when its target is inside that directory (how Kubernetes mounts secrets); a link
out of it is refused, so a key folder cannot make the server read files elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve

from fedfleet.shared.errors import FedfleetError

MAX_KEY_BYTES = 16 * 1024
"""No OpenSSH public key is near this; a larger file is not one."""


class KeyFileError(FedfleetError):
    """A key file that cannot be registered; the message names it and says why."""


@dataclass(frozen=True)
class NodeKey:
    """One device key to register: its file, the device's name, the folder it is in."""

    path: Path
    name: str | None = None
    folder: Path | None = None
    """The key directory it was found in: a symbolic link out of it is refused."""


def key_files(paths: Iterable[Path]) -> list[NodeKey]:
    """Return the keys ``paths`` name: files as given, directories' ``*.pub`` (sorted).

    Each is named after its file, without ``.pub``.

    Raises
    ------
    KeyFileError
        If a path does not exist.
    """
    found: list[NodeKey] = []
    for path in paths:
        if path.is_dir():
            found += [NodeKey(pub, pub.stem, path) for pub in sorted(path.glob("*.pub"))]
        elif path.exists() or path.is_symlink():
            found.append(NodeKey(path, path.stem))
        else:
            raise KeyFileError(f"{path} does not exist")
    return found


def inside(path: Path, folder: Path) -> bool:
    """Return True if ``path`` resolves to a place inside ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())


def read_public_key(path: Path, folder: Path | None = None) -> bytes:
    """Read and check the key in ``path``; return it as Flower sends it (PEM).

    ``folder``: the key directory ``path`` was found in; a symbolic link out of it
    is refused.

    Raises
    ------
    KeyFileError
        If the file cannot be read or holds no OpenSSH ECDSA key on a NIST curve.
    """
    if folder is not None and path.is_symlink() and not inside(path, folder):
        raise KeyFileError(f"{path}: a symbolic link to {path.resolve()}, outside "
                           f"{folder}; copy the key into the folder instead")
    if not path.exists():
        raise KeyFileError(f"{path}: no such file (a dangling link?)")
    if not path.is_file():
        raise KeyFileError(f"{path}: not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read it ({err.strerror})") from None
    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_BYTES} bytes, not a public key")
    return parse_public_key(data, str(path))


def parse_public_key(data: bytes, label: str) -> bytes:
    """Check that ``data`` is an OpenSSH ECDSA public key on a NIST curve; return PEM.

    Raises
    ------
    KeyFileError
        If it is not; the message starts with ``label``.
    """
    text = data.strip()
    kind = text.split(maxsplit=1)[0].decode("ascii", "replace")[:40] if text else ""
    if not text:
        raise KeyFileError(f"{label}: empty, not a public key")
    try:
        key = serialization.load_ssh_public_key(text)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{label}: not an OpenSSH public key (expected one line "
                           "'ecdsa-sha2-nistp384 AAAA...', as 'fedfleet node-key' "
                           "writes)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{label}: a {kind} key; Flower accepts only ECDSA keys on "
                           "NIST curves (make one with 'fedfleet node-key')")
    if not uses_nist_ec_curve(key):
        raise KeyFileError(f"{label}: ECDSA curve {key.curve.name} is not a NIST curve")
    return public_key_to_bytes(key)
