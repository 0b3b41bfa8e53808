"""Device keys the server registers on start: each once, bad ones named, ledger kept.

Includes the hostile key folders: files that are not keys, Ed25519 keys, one key under
two names, no keys at all, a link out of the folder, odd file names, a FIFO.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fake_control import FakeControlApi

from fedfleet.server.host import authorized_keys
from fedfleet.server.host.authorized_keys import register_authorized_keys
from fedfleet.server.host.control import Control
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.keys import create_node_key


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeControlApi:
    return FakeControlApi().install(monkeypatch)


def _control(tmp_path: Path) -> Control:
    return Control("127.0.0.1:8000", tmp_path / "cli")


def _key(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    made = folder.parent / "made"
    made.mkdir(exist_ok=True)
    create_node_key(made / name, force=True)
    return Path(shutil.copy(made / f"{name}.pub", folder / f"{name}.pub"))


def _ledger(state: Path) -> dict[str, dict[str, object]]:
    return dict(json.loads((state / "authorized-keys.json").read_text()))


def _openssh(public: object) -> str:
    assert isinstance(public, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey))
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()


def test_authorized_keys_are_registered_once(api: FakeControlApi, tmp_path: Path) -> None:
    """A key revoked after its first registration is not registered again on restart."""
    # Prepare
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    _key(keys, "edge-1")
    _control(tmp_path).register_node(_key(keys, "edge-2"), "by-hand")
    echoed: list[str] = []
    progress: list[tuple[int, int]] = []

    # Execute
    lines = register_authorized_keys(_control(tmp_path), keys, state, echo=echoed.append,
                                     progress=lambda d, t: progress.append((d, t)))
    for node in api.nodes.values():
        node.status = "unregistered"  # as if both were revoked
    again = register_authorized_keys(_control(tmp_path), keys, state)

    # Assert
    edge1 = next(i for i, n in api.nodes.items() if n.name == "edge-1")
    assert lines == [f"registered edge-1 as node {edge1}",
                     "registered edge-2 (was registered already)"]
    assert echoed == lines and progress == [(0, 2), (1, 2), (2, 2)]
    assert again == []
    assert len(api.requests) == 3  # by hand, edge-1, edge-2; nothing on restart
    assert sorted(v["name"] for v in _ledger(state).values()) == ["edge-1", "edge-2"]


def test_the_ledger_is_written_in_chunks_and_kept_when_a_later_key_fails(
        api: FakeControlApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """7 keys, a chunk of 3, the SuperLink gone after 5: the 5 registered are recorded."""
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    for i in range(7):
        _key(keys, f"edge-{i}")
    monkeypatch.setattr(authorized_keys, "LEDGER_EVERY", 3)
    writes: list[int] = []
    real = authorized_keys.write_atomic
    monkeypatch.setattr(authorized_keys, "write_atomic", lambda path, data: (
        writes.append(len(json.loads(data))), real(path, data)))
    api.refuse_after = 5

    with pytest.raises(FedfleetError, match="does not answer"):
        register_authorized_keys(_control(tmp_path), keys, state)

    assert writes == [3, 5]  # a chunk, then what was done when it broke
    assert sorted(v["name"] for v in _ledger(state).values()) == [
        f"edge-{i}" for i in range(5)]
    api.refuse_after = None
    assert register_authorized_keys(_control(tmp_path), keys, state) == [
        f"registered edge-{i} as node {1000 + i + 1}" for i in (5, 6)]


def test_a_bad_key_among_many_names_the_file_and_the_others_stay(
        api: FakeControlApi, tmp_path: Path) -> None:
    """Not a key, an Ed25519 key: one-line errors; the good keys are registered."""
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    for name in ("a", "c", "e"):
        _key(keys, name)
    (keys / "b.pub").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    (keys / "d.pub").write_text(_openssh(
        ed25519.Ed25519PrivateKey.generate().public_key()) + " d@host\n")
    echoed: list[str] = []

    with pytest.raises(FedfleetError) as failure:
        register_authorized_keys(_control(tmp_path), keys, state, echo=echoed.append)

    message = str(failure.value)
    assert "\n" not in message
    assert message == (f"cannot register {keys / 'b.pub'}: not an OpenSSH public key "
                       "(expected one line 'ecdsa-sha2-nistp384 AAAA...', as 'fedfleet "
                       "node-key' writes) (and 1 more key(s), listed above)")
    assert f"cannot register {keys / 'd.pub'}: a ssh-ed25519 key; Flower accepts only " \
           "ECDSA keys on NIST curves (make one with 'fedfleet node-key')" in echoed
    assert sorted(n.name for n in api.nodes.values()) == ["a", "c", "e"]
    assert sorted(v["name"] for v in _ledger(state).values()) == ["a", "c", "e"]


def test_one_key_under_two_names_is_registered_once(api: FakeControlApi,
                                                    tmp_path: Path) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    shutil.copy(_key(keys, "alpha"), keys / "beta.pub")
    echoed: list[str] = []

    lines = register_authorized_keys(_control(tmp_path), keys, state, echo=echoed.append)

    assert lines == ["registered alpha as node 1001"]
    assert "skipped beta: the same key as alpha.pub" in echoed
    assert len(api.requests) == 1


def test_a_folder_without_keys_registers_nothing(api: FakeControlApi,
                                                 tmp_path: Path) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    keys.mkdir()
    state.mkdir()
    (keys / "README.txt").write_text("put *.pub here")

    assert register_authorized_keys(_control(tmp_path), keys, state) == []
    assert api.requests == []


def test_a_link_out_of_the_folder_is_refused_unread(api: FakeControlApi,
                                                    tmp_path: Path) -> None:
    """A link inside the folder is followed (Kubernetes secrets); one out is refused."""
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    outside = _key(tmp_path / "elsewhere", "stray")
    inner = _key(keys / "..data", "edge-1")
    (keys / "edge-1.pub").symlink_to(inner)
    (keys / "stray.pub").symlink_to(outside)

    with pytest.raises(FedfleetError, match=(
            f"^cannot register {keys / 'stray.pub'}: a symbolic link to {outside}, "
            f"outside {keys}; copy the key into the folder instead$")):
        register_authorized_keys(_control(tmp_path), keys, state)

    assert [n.name for n in api.nodes.values()] == ["edge-1"]


def test_odd_file_names_become_device_names(api: FakeControlApi, tmp_path: Path) -> None:
    """Spaces, unicode, quotes, a leading dash: the name is sent as it is, never run."""
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    names = ["edge 1 (lab)", "gerät-ü", "--name=x", "a'b\"c;$(id)"]
    for name in names:
        _key(keys, name)

    lines = register_authorized_keys(_control(tmp_path), keys, state)

    assert sorted(n.name for n in api.nodes.values()) == sorted(names)
    assert len(lines) == 4


def test_a_fifo_or_a_folder_named_pub_is_refused_without_blocking(
        api: FakeControlApi, tmp_path: Path) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    state.mkdir()
    _key(keys, "good")
    os.mkfifo(keys / "pipe.pub")
    (keys / "dir.pub").mkdir()
    echoed: list[str] = []

    with pytest.raises(FedfleetError, match="not a regular file"):
        register_authorized_keys(_control(tmp_path), keys, state, echo=echoed.append)

    assert [n.name for n in api.nodes.values()] == ["good"]
    assert sum("not a regular file" in line for line in echoed) == 2


def test_a_huge_file_is_not_read_whole(api: FakeControlApi, tmp_path: Path) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    keys.mkdir()
    state.mkdir()
    with (keys / "big.pub").open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)

    with pytest.raises(FedfleetError, match="larger than 16384 bytes, not a public key"):
        register_authorized_keys(_control(tmp_path), keys, state)
