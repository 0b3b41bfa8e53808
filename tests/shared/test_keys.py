"""Node keys from 'fedfleet node-key': the form Flower's node authentication needs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedfleet.shared.cli import cli
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.keys import create_node_key


def test_key_is_ecdsa_openssh_and_owner_only(tmp_path: Path) -> None:
    """The private key loads as an OpenSSH EC key; the .pub is its public half."""
    path = tmp_path / "node-key"
    public = create_node_key(path)
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)
    assert public.startswith("ecdsa-sha2-nistp384 ")
    assert (tmp_path / "node-key.pub").read_text().strip() == public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_key_is_kept_unless_forced(tmp_path: Path) -> None:
    """Replacing a key changes the node's identity, so it needs --force."""
    path = tmp_path / "node-key"
    first = create_node_key(path)
    with pytest.raises(ConfigError, match="--force"):
        create_node_key(path)
    assert create_node_key(path, force=True) != first


def test_node_key_command_prints_the_public_key(tmp_path: Path) -> None:
    """Only the public key goes to stdout, ready to paste or pipe."""
    result = CliRunner().invoke(cli, ["node-key", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0
    assert result.stdout.startswith("ecdsa-sha2-nistp384 ")
