"""Atomic writes never go through a planted file or symlink and set modes up front.

Each test plants symlinks (to a victim file) at the temporary names fedfleet used to
write through (``.NAME.tmp`` and friends) and at the target itself, then checks what
is on disk: the victim unchanged, the target a regular file with the right mode.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedfleet.shared.atomic import PRIVATE, save_atomic, write_atomic
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.keys import create_node_key
from fedfleet.shared.secrets import write_private

VICTIM_TEXT = b"victim: must never change\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "victim"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    path.chmod(0o644)
    return path


UMASK = 0o027
"""Not the usual 022: public files must show it, keys must not depend on it."""
SHARED = 0o666 & ~UMASK
"""Outputs, state and certificates get the process's usual permissions (the umask, or a
folder's default ACL, which is how compose shares ./outputs with the host user)."""


@pytest.fixture(autouse=True)
def _unusual_umask() -> Iterator[None]:
    """Keys' modes come from fchmod; everything else follows the process's umask."""
    old = os.umask(UMASK)
    yield
    os.umask(old)


def _plant(victim: Path, *links: Path) -> None:
    for link in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)


def _regular(path: Path, mode: int) -> None:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode), f"{path} is not a regular file"
    assert stat.S_IMODE(info.st_mode) == mode, (path, oct(stat.S_IMODE(info.st_mode)))


def _intact(victim: Path, folder: Path) -> None:
    assert victim.read_bytes() == VICTIM_TEXT
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")
                 and not p.is_symlink()]
    assert leftovers == []


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path: Path,
                                                                  victim: Path) -> None:
    target = tmp_path / "metrics.json"
    _plant(victim, target, tmp_path / ".metrics.json.tmp")
    write_atomic(target, "{}", 0o644)
    assert target.read_text() == "{}"
    _regular(target, 0o644)
    _intact(victim, tmp_path)


def test_exclusive_refuses_anything_at_the_target(tmp_path: Path, victim: Path) -> None:
    dangling = tmp_path / "key"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="already exists"):
        write_atomic(dangling, b"secret", PRIVATE, exclusive=True)
    assert not (tmp_path / "nowhere").exists() and dangling.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "key"]


def test_a_failed_save_leaves_no_trace(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"old")

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_atomic(target, broken)
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_private_keys_are_0600_and_never_written_through_links(tmp_path: Path,
                                                              victim: Path) -> None:
    key = tmp_path / "node-key"
    _plant(victim, tmp_path / ".node-key.tmp", tmp_path / ".node-key.pub.tmp")
    public = create_node_key(key)
    _regular(key, 0o600)
    _regular(tmp_path / "node-key.pub", 0o644)
    assert (tmp_path / "node-key.pub").read_text() == public + "\n"
    _intact(victim, tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        write_private(key, b"other")
    (tmp_path / "node-key.pub").unlink()
    _plant(victim, tmp_path / "node-key.pub")
    with pytest.raises(ConfigError, match="already exists"):  # a link to a file exists
        create_node_key(key)
    create_node_key(key, force=True)
    _regular(tmp_path / "node-key.pub", 0o644)
    _intact(victim, tmp_path)


def test_run_outputs_and_strategy_state(tmp_path: Path, victim: Path) -> None:
    """metrics.json/.csv, a checkpoint and the strategy state, with links planted."""
    from fedfleet.server.results.run_files import RunFiles, state_path
    from fedfleet.server.run.resume import save_strategy_state
    from fedfleet.shared.models import build_model

    outputs = RunFiles(tmp_path / "run")
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    _plant(victim, run / ".metrics.json.tmp", run / ".metrics.csv.tmp",
           run / "metrics.json", checkpoints / ".round-001.tmp.keras",
           checkpoints / "round-001.keras", checkpoints / ".round-001.state.tmp.npz")
    outputs.write_record({"rounds": [{"round": 1}]})
    assert json.loads(outputs.metrics_json.read_text()) == {"rounds": [{"round": 1}]}
    _regular(outputs.metrics_json, SHARED)
    _regular(run / "metrics.csv", SHARED)
    outputs.save_model(build_model("mlp", (4,), 2), outputs.checkpoint(1))
    _regular(outputs.checkpoint(1), SHARED)
    strategy = type("S", (), {"m_t": {"0": np.ones(3)}})()
    save_strategy_state(strategy, state_path(run, 1))
    _regular(state_path(run, 1), SHARED)
    with np.load(state_path(run, 1)) as saved:
        np.testing.assert_array_equal(saved["m_t/0"], np.ones(3))
    _intact(victim, run)
    _intact(victim, checkpoints)


def test_the_authorized_keys_ledger(tmp_path: Path, victim: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_control import FakeControlApi

    from fedfleet.server.host.authorized_keys import register_authorized_keys
    from fedfleet.server.host.control import Control
    from fedfleet.shared.keys import create_node_key

    FakeControlApi().install(monkeypatch)
    keys = tmp_path / "keys"
    keys.mkdir()
    create_node_key(keys / "edge-1")
    (keys / "edge-1").unlink()  # only the .pub stays in the folder
    state = tmp_path / "state"
    _plant(victim, state / ".authorized-keys.json.tmp")
    (state / "authorized-keys.json").symlink_to(tmp_path / "dangling")

    register_authorized_keys(Control("h:1", tmp_path / "cli"), keys, state)
    _regular(state / "authorized-keys.json", SHARED)
    assert not (tmp_path / "dangling").exists()
    _intact(victim, state)
