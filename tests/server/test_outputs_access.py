"""outputs-init: the host user can use what the server (another UID) writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfleet.server.host.outputs_access import acl_bytes, host_owner, parse_owner, share

SERVER, HOST = 49999, 45678
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as other users")


def _as(uid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           *cmd], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def outputs() -> Iterator[Path]:
    """Yield a root-owned folder others can reach (pytest's tmp is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="fedfleet-outputs-", dir="/tmp"))
    base.chmod(0o755)
    folder = base / "outputs"
    folder.mkdir()
    yield folder
    shutil.rmtree(base)


def test_acl_layout_is_what_the_kernel_expects() -> None:
    """Version 2 header, entries sorted by tag, a mask when there are named users."""
    data = acl_bytes(0o644, [SERVER, HOST, 0], owner=0, named_perm=6)
    assert data[:4] == (2).to_bytes(4, "little")
    tags = [int.from_bytes(data[i:i + 2], "little") for i in range(4, len(data), 8)]
    assert tags == [0x01, 0x02, 0x02, 0x04, 0x10, 0x20]


def test_owner_comes_from_the_override_the_folder_or_a_reference(tmp_path: Path) -> None:
    """FEDFLEET_OUTPUTS_OWNER wins; root-owned paths are skipped."""
    assert parse_owner("1000") == (1000, 1000) and parse_owner("1000:20") == (1000, 20)
    with pytest.raises(ValueError):
        parse_owner("me")
    ref = tmp_path / "compose.yaml"
    ref.write_text("x")
    if os.geteuid() == 0:
        os.chown(ref, HOST, HOST + 1)
        assert host_owner(tmp_path, [ref]) == (HOST, HOST + 1)  # folder is root's
    assert host_owner(tmp_path, [ref], override="7:8") == (7, 8)


@needs_root
def test_server_writes_and_host_user_edits_and_deletes(outputs: Path) -> None:
    """After share(): the server UID creates a run; the host user edits and removes it."""
    (outputs / "run-1").mkdir()
    (outputs / "run-1" / "old.json").write_text("{}")  # an earlier run, owned by root
    share(outputs, SERVER, (HOST, HOST))
    assert outputs.stat().st_uid == HOST
    run = outputs / "run-2"
    made = _as(SERVER, "sh", "-c", f"umask 022 && mkdir -p {run}/checkpoints && "
                                   f"echo {{}} > {run}/metrics.json && "
                                   f"echo x > {run}/checkpoints/round-001.keras")
    assert made.returncode == 0, made.stderr
    assert (outputs / "run-2" / "metrics.json").stat().st_uid == SERVER
    edit = _as(HOST, "sh", "-c", f"echo more >> {outputs}/run-2/metrics.json && "
                                 f"cat {outputs}/run-1/old.json")
    assert edit.returncode == 0, edit.stderr
    removed = _as(HOST, "rm", "-rf", str(outputs / "run-1"), str(outputs / "run-2"))
    assert removed.returncode == 0, removed.stderr
    assert list(outputs.iterdir()) == []
    other = _as(HOST + 1, "touch", str(outputs / "intruder"))
    assert other.returncode != 0  # nobody else got write access


@needs_root
def test_without_a_host_owner_the_server_still_writes(outputs: Path) -> None:
    """Only root in sight (CI): the folder goes to the server's UID, as before."""
    share(outputs, SERVER, None)
    assert outputs.stat().st_uid == SERVER
    assert _as(SERVER, "mkdir", str(outputs / "run-3")).returncode == 0


@needs_root
def test_symlinks_inside_are_not_followed(outputs: Path, tmp_path: Path) -> None:
    """A link planted in the outputs cannot make root change a file elsewhere."""
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    before = os.listxattr(target)
    (outputs / "link").symlink_to(target)
    share(outputs, SERVER, (HOST, HOST))
    assert os.listxattr(target) == before and target.stat().st_uid == 0
