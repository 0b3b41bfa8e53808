"""The device's node key: an ECDSA key pair in the OpenSSH form Flower's node auth needs."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedfleet.shared.atomic import PUBLIC, write_atomic
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.secrets import write_private


def create_node_key(path: Path, force: bool = False) -> str:
    """Write a private key to ``path`` (owner-only) and ``path.pub``; return the public key.

    Raises
    ------
    ConfigError
        If the key exists and ``force`` is not set: replacing it changes the node's
        identity, and the server must register the new public key.
    """
    pub = path.with_name(path.name + ".pub")
    if (path.exists() or pub.exists()) and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it (the server "
                          "must then register the new public key)")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    write_private(path, private, force=True)
    write_atomic(pub, public + "\n", PUBLIC)
    return public
