"""'fedfleet secrets': the CA, certificate and node keys of a compose fleet."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fedfleet.server.host.compose_secrets import create_fleet_secrets
from fedfleet.shared.errors import FedfleetError


def test_each_service_gets_only_its_own_secrets(tmp_path: Path) -> None:
    """server/ has the server key and the devices' public keys; a client only its key."""
    create_fleet_secrets(tmp_path, ["client-1", "client-2"], ["gateway"])
    assert sorted(p.name for p in (tmp_path / "client-1").iterdir()) == [
        "ca.crt", "node.key", "node.key.pub"]
    assert sorted(p.name for p in (tmp_path / "server").iterdir()) == [
        "authorized-keys", "ca.crt", "server.key", "server.pem"]
    assert sorted(p.name for p in (tmp_path / "server" / "authorized-keys").iterdir()) == [
        "client-1.pub", "client-2.pub"]
    for key in (tmp_path / "server" / "server.key", tmp_path / "client-1" / "node.key",
                tmp_path / "ca" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    cert = x509.load_pem_x509_certificate((tmp_path / "server" / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "client-2" / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"gateway", "server"} <= set(san.get_values_for_type(x509.DNSName))


def test_a_second_run_keeps_everything_and_adds_new_clients(tmp_path: Path) -> None:
    """Running on every start never replaces a key or the certificate."""
    create_fleet_secrets(tmp_path, ["client-1"], [])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    made = create_fleet_secrets(tmp_path, ["client-1", "client-2"], [])
    assert made.created == [tmp_path / "client-2" / "node.key"]
    for path, content in before.items():
        assert path.read_bytes() == content, path
GROUP = 49999
as_root = pytest.mark.skipif(os.getuid() != 0, reason="giving files to a group needs root")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@as_root
def test_containers_can_read_their_folder_but_replace_nothing(tmp_path: Path) -> None:
    """Owner stays the folder's owner; services read via group 49999; ca/ is private."""
    root = tmp_path / "secrets"
    create_fleet_secrets(root, ["client-1"], ["gateway"], group=GROUP)
    info = root.stat()
    assert (info.st_uid, info.st_gid, _mode(root)) == (0, 0, 0o755)
    for path in [root / "ca", *(root / "ca").iterdir()]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (0, 0), path
    assert _mode(root / "ca") == 0o700 and _mode(root / "ca" / "ca.key") == 0o600
    for service in ("server", "client-1"):
        for path in [root / service, *(root / service).rglob("*")]:
            st = path.lstat()
            assert (st.st_uid, st.st_gid) == (0, GROUP), path
            assert _mode(path) == (0o750 if path.is_dir() else 0o640), path
    for path in root.rglob("*"):  # nothing anywhere is writable by group or others
        assert not path.lstat().st_mode & 0o022 and path.lstat().st_uid != GROUP, path


@as_root
def test_a_tree_given_away_by_an_older_release_is_taken_back(tmp_path: Path) -> None:
    """Old secrets-init chowned everything but ca/ to 49999, who planted links: all undone."""
    root = tmp_path / "secrets"
    create_fleet_secrets(root, ["client-1"], ["gateway"])
    for path in [root, *root.rglob("*")]:  # what --owner=49999 used to do
        if "ca" not in path.relative_to(root).parts[:1]:
            os.chown(path, GROUP, GROUP)
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    fake_ca = tmp_path / "attacker-ca"
    fake_ca.mkdir()
    (fake_ca / "ca.crt").write_text("attacker's CA\n")
    (root / "client-1" / "ca.crt").unlink()
    (root / "client-1" / "ca.crt").symlink_to(victim)
    (root / "server" / "authorized-keys" / "client-1.pub").unlink()
    (root / "server" / "authorized-keys" / "client-1.pub").symlink_to(victim)
    (root / "server" / "authorized-keys" / "mallory.pub").symlink_to(victim)
    os.rename(root / "ca", tmp_path / "old-ca")  # root/ was theirs: swap in their CA
    (root / "ca").symlink_to(fake_ca)

    made = create_fleet_secrets(root, ["client-1"], ["gateway"], group=GROUP)
    assert victim.read_text() == "do not touch\n"
    assert (fake_ca / "ca.crt").read_text() == "attacker's CA\n"
    assert sorted(p.relative_to(root).as_posix() for p in made.removed) == [
        "ca", "client-1/ca.crt", "server/authorized-keys/client-1.pub",
        "server/authorized-keys/mallory.pub"]
    assert not any(p.is_symlink() for p in root.rglob("*"))
    assert (root / "ca").is_dir() and root / "server" / "server.pem" in made.created
    ca = x509.load_pem_x509_certificate((root / "client-1" / "ca.crt").read_bytes())
    assert ca.subject == x509.load_pem_x509_certificate(
        (root / "ca" / "ca.crt").read_bytes()).subject
    for path in [root, *root.rglob("*")]:
        assert path.lstat().st_uid == 0, path
    assert (root / "server" / "authorized-keys" / "client-1.pub").read_bytes() == \
        (root / "client-1" / "node.key.pub").read_bytes()


def test_a_group_needs_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the right to chown, --group fails with one clear line."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    with pytest.raises(FedfleetError, match="cannot give .* to group 49999 .*run "
                       "'fedfleet secrets' as root"):
        create_fleet_secrets(tmp_path / "s", ["client-1"], [], group=GROUP)
