"""'fedfleet nodes register' with many keys, and the fleet registry on one connection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_control import FakeControlApi

from fedfleet.shared.cli import cli
from fedfleet.shared.keys import create_node_key

CONNECTION = ["--server", "127.0.0.1:8000", "--insecure"]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeControlApi:
    return FakeControlApi().install(monkeypatch)


def _keys(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        create_node_key(folder / name)
        (folder / name).unlink()
    return [folder / f"{name}.pub" for name in names]


def test_files_and_a_folder_in_one_call(api: FakeControlApi, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A line per key, then the summary with the time taken."""
    monkeypatch.chdir(tmp_path)
    single = _keys(tmp_path / "one", "lab-pi")
    _keys(tmp_path / "devices", "edge-1", "edge-2", "edge-3")

    result = CliRunner().invoke(cli, ["nodes", "register", str(single[0]), "devices",
                                      "--state-dir", "st", *CONNECTION])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5
    assert re.fullmatch(r".*/one/lab-pi\.pub: registered node \d+ as lab-pi", lines[0])
    assert re.fullmatch(r"devices/edge-3\.pub: registered node \d+ as edge-3", lines[3])
    assert re.fullmatch(r"4 registered, 0 already registered, 0 refused, of 4 key\(s\) "
                        r"in \d+\.\ds", lines[4])
    assert sorted(n.name for n in api.nodes.values()) == ["edge-1", "edge-2", "edge-3",
                                                          "lab-pi"]
    assert len(api.clients) == 1


def test_refused_and_already_are_reported_and_refused_fails(
        api: FakeControlApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    keys = _keys(tmp_path / "devices", "a", "b")
    (tmp_path / "devices" / "c.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n")
    runner = CliRunner()
    runner.invoke(cli, ["nodes", "register", str(keys[0]), "--state-dir", "st",
                        *CONNECTION])

    result = runner.invoke(cli, ["nodes", "register", "devices", "--state-dir", "st",
                                 *CONNECTION])

    assert result.exit_code == 1
    assert "devices/a.pub: already registered (a)\n" in result.output
    assert "refused devices/c.pub: not an OpenSSH public key" in result.output
    assert "1 registered, 1 already registered, 1 refused, of 3 key(s)" in result.output
    assert result.output.rstrip().endswith("Error: 1 key(s) refused; see the 'refused' "
                                           "lines above")


def test_name_and_stdin_for_one_key(api: FakeControlApi, tmp_path: Path) -> None:
    keys = _keys(tmp_path / "devices", "a", "b")
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path / "st"), *CONNECTION]

    named = runner.invoke(cli, ["nodes", "register", str(keys[0]), "--name", "lab", *state])
    piped = runner.invoke(cli, ["nodes", "register", "-", "--name", "pipe", *state],
                          input=keys[1].read_text())
    both = runner.invoke(cli, ["nodes", "register", str(tmp_path / "devices"), "--name",
                               "x", *state])
    mixed = runner.invoke(cli, ["nodes", "register", "-", str(keys[0]), *state])

    assert named.exit_code == 0 and "registered node" in named.output
    assert piped.exit_code == 0 and "registered node" in piped.output
    assert sorted(n.name for n in api.nodes.values()) == ["lab", "pipe"]
    assert both.exit_code == 2 and "--name names one device, but 2 keys" in both.output
    assert mixed.exit_code == 2 and "'-' (stdin) takes one key alone" in mixed.output


def test_a_folder_without_keys_is_one_line(api: FakeControlApi, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["nodes", "register", str(tmp_path / "empty"),
                                      "--state-dir", str(tmp_path / "st"), *CONNECTION])
    assert result.exit_code == 2
    assert f"no *.pub key files in {tmp_path / 'empty'}" in result.output
    assert api.requests == []


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    from ports import free_port

    keys = _keys(tmp_path / "devices", "a")
    port = free_port()
    result = CliRunner().invoke(cli, ["nodes", "register", str(keys[0]), "--insecure",
                                      "--server", f"127.0.0.1:{port}",
                                      "--state-dir", str(tmp_path / "st")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        f"Error: cannot register: the SuperLink at 127.0.0.1:{port} does not answer")


def test_the_direct_fleet_registry_keeps_one_connection(api: FakeControlApi,
                                                       tmp_path: Path) -> None:
    """Register, list, revoke over one client; a known key is 'already in use'."""
    from fedfleet.server.fleet.nodes import DirectRegistry, RegistryError
    from fedfleet.server.host.certs import create_certificates

    ca = create_certificates(tmp_path / "certs", []).ca_cert
    keys = _keys(tmp_path / "devices", "a", "b")
    registry = DirectRegistry("127.0.0.1:8000", ca, tmp_path / "state")

    first = registry.register(keys[0].read_text(), "a")
    second = registry.register(keys[1].read_text(), "b")
    registry.revoke(first)
    nodes = registry.nodes(fresh=True)
    with pytest.raises(RegistryError, match="already in use"):
        registry.register(keys[0].read_text(), "a-again")
    with pytest.raises(RegistryError, match="the key of device bad: not an OpenSSH"):
        registry.register("hello", "bad")
    registry.close()

    assert {node: row["status"] for node, row in nodes.items()} == {
        first: "unregistered", second: "registered"}
    assert len(api.clients) == 1
    assert not list((tmp_path / "state").glob("*.pub"))  # no key files left behind


def test_the_container_registry_reads_already_registered_as_in_use() -> None:
    """Compose: a known key is reported as 'already in use', as the engine expects."""
    from types import SimpleNamespace

    from fedfleet.server.fleet.nodes import ContainerRegistry, RegistryError

    container = SimpleNamespace(
        status="running", put_archive=lambda path, data: True,
        exec_run=lambda cmd, demux: SimpleNamespace(exit_code=0, output=(
            b"/tmp/fleet-a.pub: already registered (a)\n0 registered, 1 already "
            b"registered, 0 refused, of 1 key(s) in 0.1s\n", b"")))
    client = SimpleNamespace(containers=SimpleNamespace(get=lambda name: container))

    with pytest.raises(RegistryError, match="the key of a is already in use"):
        ContainerRegistry(client, "fedfleet-server-1").register("ecdsa AAAA", "a")


def test_links_a_folder_holds_and_links_named_on_the_command_line(
        api: FakeControlApi, tmp_path: Path) -> None:
    """In a folder, a link out of it is refused; a link named explicitly is followed."""
    outside = _keys(tmp_path / "elsewhere", "stray")[0]
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "stray.pub").symlink_to(outside)
    (tmp_path / "named.pub").symlink_to(outside)
    state = ["--state-dir", str(tmp_path / "st"), *CONNECTION]

    folder = CliRunner().invoke(cli, ["nodes", "register", str(tmp_path / "devices"),
                                      *state])
    named = CliRunner().invoke(cli, ["nodes", "register", str(tmp_path / "named.pub"),
                                     *state])

    assert folder.exit_code == 1
    assert (f"refused {tmp_path / 'devices' / 'stray.pub'}: a symbolic link to {outside}, "
            f"outside {tmp_path / 'devices'}") in folder.output
    assert named.exit_code == 0 and "registered node" in named.output
    assert [n.name for n in api.nodes.values()] == ["named"]
