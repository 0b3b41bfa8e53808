"""fleet.toml: the example parses; each bad entry is one line naming file, device, field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedfleet.server.fleet.inventory import load_inventory, parse_size
from fedfleet.server.fleet.specs import Endpoint, SshOptions
from fedfleet.shared.errors import ConfigError

ROOT = Path(__file__).parents[2]


def _files(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")


def _write(folder: Path, text: str) -> Path:
    _files(folder, "ca.crt", "tls/ca.pem", "tls/cert.pem", "tls/key.pem")
    path = folder / "fleet.toml"
    path.write_text(text)
    return path


SERVER = '[server]\naddress = "10.0.0.1:8000"\nca = "ca.crt"\n'


def test_the_documented_example_parses(tmp_path: Path) -> None:
    """fleet.example.toml is a valid inventory once its files exist."""
    # Prepare
    shutil.copy(ROOT / "fleet.example.toml", tmp_path / "fleet.toml")
    _files(tmp_path, "secrets/server/ca.crt", "keys/fleet_ed25519", "keys/known_hosts",
           "docker-tls/ca.pem", "docker-tls/cert.pem", "docker-tls/key.pem")
    # Execute
    inventory = load_inventory(tmp_path / "fleet.toml")
    # Assert
    assert list(inventory.devices) == ["pi-kitchen", "lab-jetson"]
    pi, jetson = inventory.devices["pi-kitchen"], inventory.devices["lab-jetson"]
    assert pi.endpoint.scheme == "ssh" and pi.endpoint.ssh is not None
    assert pi.endpoint.ssh.identity == tmp_path / "keys/fleet_ed25519"
    assert (pi.data, pi.memory, pi.cpus, pi.partition) == \
        ("/srv/fedfleet/data", 1500 * 2**20, 1.0, "0/2")
    assert jetson.endpoint.tls is not None and jetson.data.endswith("digits.npz")
    assert pi.join_options == ("--connect-timeout", "300")
    assert inventory.server.control == "127.0.0.1:8000"
    assert inventory.server.outputs == tmp_path / "outputs"
    assert (pi.container, pi.key_volume) == ("fedfleet-pi-kitchen", "fedfleet-pi-kitchen-key")


def test_every_problem_is_one_line_with_file_device_and_field(tmp_path: Path) -> None:
    """Many mistakes at once: each is reported, each on its own line."""
    path = _write(tmp_path, SERVER + """
[defaults]
image = "fedfleet-client:0.1.0"
data = "/data"
colour = "blue"

[devices.plain-tcp]
endpoint = "tcp://10.0.0.2:2375"

[devices.bad-bits]
endpoint = "ssh://pi@10.0.0.3"
partition = "3/3"
memory = "lots"
join_options = ["--server", "elsewhere:8000"]
tls = { ca = "tls/ca.pem", cert = "tls/cert.pem", key = "tls/key.pem" }

[devices.missing-files]
endpoint = "tcp://10.0.0.4:2376"
tls = { ca = "tls/ca.pem", cert = "nope.pem", key = "tls/key.pem" }
data = "relative/path"

[devices.Bad_Name]
endpoint = "http://10.0.0.5:2375"
""")
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    lines = str(caught.value).splitlines()
    expected = [
        "[defaults]: colour: unknown field",
        "device 'plain-tcp': tls: required for tcp://10.0.0.2:2375: plain tcp:// gives "
        "anyone on the network root on the device",
        "device 'bad-bits': partition: '3/3': use \"I/N\" with 0 <= I < N",
        "device 'bad-bits': memory: 'lots': a size",
        "device 'bad-bits': join_options: --server is set by fleet deploy; use "
        "server.address instead",
        "device 'bad-bits': tls: only for tcp:// endpoints",
        f"device 'missing-files': tls.cert: {tmp_path}/nope.pem does not exist",
        "device 'missing-files': data: 'relative/path': give an absolute path",
        "device 'Bad_Name': name: use lowercase letters",
        "device 'Bad_Name': endpoint: 'http://10.0.0.5:2375': unknown scheme",
    ]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert len(lines) == len(expected), lines


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\n", "[server]: address: required"),
    ('[server]\naddress = "x:8000"\nca = "nope.crt"\n', "ca: "),
    (SERVER + 'control = "a:1"\ncontrol_container = "s"\n', "not both"),
    (SERVER + "[devices]\n", ""),
    ("not toml [", "not valid TOML"),
])
def test_server_table_and_syntax_problems(tmp_path: Path, text: str, message: str) -> None:
    """A broken [server] table or TOML syntax is named too."""
    path = _write(tmp_path, text)
    if not message:  # an empty device list is valid: nothing to deploy
        assert load_inventory(path).devices == {}
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_inventory(path)


def test_unknown_device_names_are_refused(tmp_path: Path) -> None:
    """Asking for a device the inventory does not have names the ones it has."""
    path = _write(tmp_path, SERVER + '[devices.a]\nendpoint = "local"\ndata = "builtin:digits"'
                  '\nimage = "i:1"\n')
    inventory = load_inventory(path)
    assert [d.name for d in inventory.select([])] == ["a"]
    with pytest.raises(ConfigError, match="no device named b, c \\(devices: a\\)"):
        inventory.select(["b", "c"])


def test_a_missing_inventory_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such inventory"):
        load_inventory(tmp_path / "fleet.toml")


def test_sizes() -> None:
    assert parse_size("512m") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size(1024) == 1024
    assert parse_size("-1g") is None and parse_size(True) is None


def test_endpoint_scheme() -> None:
    assert Endpoint("ssh://a@b").scheme == "ssh"
    assert Endpoint("local").scheme == "local"
    assert Endpoint("unix:///var/run/docker.sock", ssh=SshOptions()).scheme == "unix"
