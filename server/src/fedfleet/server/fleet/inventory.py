"""The fleet inventory (``fleet.toml``): the server, defaults, and one entry per device.

Every problem is reported at once, one line each, naming the file, the device, the
field and what is wrong. Paths are relative to the inventory file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedfleet.server.fleet.specs import (
    DeviceSpec,
    Endpoint,
    Inventory,
    ServerSpec,
    SshOptions,
    TlsFiles,
)
from fedfleet.shared.constants import BUILTIN_PREFIX, SUPERNODE_PORT
from fedfleet.shared.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SOURCES = ("auto", "local", "registry", "build")
"""How the client image gets onto a device: auto (registry reference: pull, else
local), local (streamed from this machine's Docker), registry (pulled by the device),
build (built by the device from the repository's context)."""

MANAGED_JOIN_OPTIONS = {
    "--server": "server.address", "--root-certificates": "server.ca",
    "--node-key": "(the device's key volume)", "--no-node-key": "(node keys are required)",
    "--insecure": "(TLS is required)", "--data": "data", "--partition": "partition",
    "--runtime-port": "runtime_port", "--home": "(fixed in the container)",
    "--drain-timeout": "drain_timeout",
}
"""``join`` options fleet deploy sets itself, and the inventory field that sets each."""

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
PLATFORM = re.compile(r"^linux/(amd64|arm64|arm)(/v\d)?$")


class _Problems:
    """Collects one line per problem: ``FILE: device 'NAME': FIELD: what is wrong``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, where: str, field_name: str, text: str) -> None:
        self.lines.append(f"{self.path}: {where}: {field_name}: {text}")


SERVER_KEYS = {"address", "ca", "control", "control_container", "control_docker", "outputs"}
DEVICE_KEYS = {"endpoint", "tls", "ssh", "data", "image", "source", "partition", "labels",
               "platform", "cpus", "memory", "min_memory", "network", "runtime_port",
               "join_options", "drain_timeout", "build_context"}
DEFAULT_KEYS = DEVICE_KEYS - {"endpoint", "partition"}


def load_inventory(path: Path) -> Inventory:
    """Read and check ``path``.

    Raises
    ------
    ConfigError
        With one line per problem found.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such inventory; write one (see README: Deploy to "
                          "your devices) or pass --inventory") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_inventory(raw, path)


def parse_inventory(raw: Mapping[str, Any], path: Path) -> Inventory:
    """Check an inventory already read from TOML (see :func:`load_inventory`).

    Raises
    ------
    ConfigError
        With one line per problem found.
    """
    problems = _Problems(path)
    base = path.parent
    for key in sorted(set(raw) - {"server", "defaults", "devices"}):
        problems.add("top level", key, "unknown table (expected [server], [defaults], "
                     "[devices.NAME])")
    server = _server(_table(raw, "server", problems, "top level"), base, problems)
    defaults = _table(raw, "defaults", problems, "top level")
    _unknown(defaults, DEFAULT_KEYS, problems, "[defaults]")
    devices: dict[str, DeviceSpec] = {}
    entries = _table(raw, "devices", problems, "top level")
    if not entries and "devices" not in raw:
        problems.add("top level", "devices", "no devices: add a [devices.NAME] table "
                     "per device")
    for name, entry in entries.items():
        where = f"device {name!r}"
        if not NAME.match(name):
            problems.add(where, "name", "use lowercase letters, digits, '.', '_' or '-' "
                         "(at most 63), starting with a letter or digit")
        if not isinstance(entry, dict):
            problems.add(where, "entry", "must be a table ([devices.NAME])")
            continue
        _unknown(entry, DEVICE_KEYS, problems, where)
        device = _device(name, {**defaults, **entry}, base, problems, where)
        if device is not None:
            devices[name] = device
    if problems.lines or server is None:
        raise ConfigError("\n".join(problems.lines))
    return Inventory(path=path, server=server, devices=devices)


def _table(raw: Mapping[str, Any], key: str, problems: _Problems, where: str
           ) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(where, key, "must be a table")
        return {}
    return value


def _unknown(entry: Mapping[str, Any], allowed: set[str], problems: _Problems,
             where: str) -> None:
    for key in sorted(set(entry) - allowed):
        problems.add(where, key, f"unknown field (known: {', '.join(sorted(allowed))})")


def _server(raw: dict[str, Any], base: Path, problems: _Problems) -> ServerSpec | None:
    where = "[server]"
    _unknown(raw, SERVER_KEYS, problems, where)
    address = raw.get("address")
    if not isinstance(address, str) or not _host_port(address):
        problems.add(where, "address", "required: the host:port devices join, e.g. "
                     "\"fl.example.org:8000\" (a name or IP in the server's certificate)")
        address = None
    ca = _file(raw.get("ca"), base, problems, where, "ca", required=True,
               hint="the CA that signed the server's certificate (certificates/ca.crt "
                    "or secrets/server/ca.crt)")
    control, container = raw.get("control"), raw.get("control_container")
    if control is not None and container is not None:
        problems.add(where, "control", "give control (host:port of the SuperLink) or "
                     "control_container (a server container to exec into), not both")
    if control is not None and (not isinstance(control, str) or not _host_port(control)):
        problems.add(where, "control", "must be host:port, e.g. \"127.0.0.1:8000\"")
    if container is not None and not isinstance(container, str):
        problems.add(where, "control_container", "must be a container name")
    docker = raw.get("control_docker")
    endpoint = None
    if docker is not None:
        endpoint = _endpoint(docker, None, None, base, problems, where, "control_docker")
    outputs = raw.get("outputs")
    if outputs is not None and not isinstance(outputs, str):
        problems.add(where, "outputs", "must be a path (the server's output directory)")
        outputs = None
    if address is None or ca is None:
        return None
    if control is None and container is None:
        control = f"127.0.0.1:{address.rsplit(':', 1)[1]}"
    return ServerSpec(address=address, ca=ca, control=control, control_container=container,
                      control_docker=endpoint,
                      outputs=(base / outputs) if outputs else None)


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and "://" not in text and port.isdigit()
                and 0 < int(port) < 65536)


def _file(value: object, base: Path, problems: _Problems, where: str, name: str,
          required: bool = False, hint: str = "") -> Path | None:
    if value is None:
        if required:
            problems.add(where, name, f"required: {hint}" if hint else "required")
        return None
    if not isinstance(value, str) or not value:
        problems.add(where, name, "must be a file path")
        return None
    path = base / Path(value).expanduser()  # an absolute path stays as it is
    if not path.is_file():
        problems.add(where, name, f"{path} does not exist" + (f" ({hint})" if hint else ""))
        return None
    return path


def _endpoint(url: object, tls: object, ssh: object, base: Path, problems: _Problems,
              where: str, name: str = "endpoint") -> Endpoint | None:
    if not isinstance(url, str) or not url:
        problems.add(where, name, "required: ssh://user@host, tcp://host:2376 (with tls), "
                     "unix:///var/run/docker.sock or local")
        return None
    scheme = url.split("://", 1)[0] if "://" in url else url
    files = None
    if scheme == "tcp":
        if not re.match(r"^tcp://[^/:]+:\d+$", url):
            problems.add(where, name, f"{url!r}: use tcp://HOST:PORT (e.g. tcp://10.0.0.7:2376)")
        if tls is None:
            problems.add(where, "tls", f"required for {url}: plain tcp:// gives anyone on the "
                         "network root on the device; give tls = { ca, cert, key } (the "
                         "daemon runs with --tlsverify) or use ssh://")
        else:
            files = _tls(tls, base, problems, where)
    elif tls is not None:
        problems.add(where, "tls", f"only for tcp:// endpoints, not {url}")
    options = None
    if scheme == "ssh":
        if not re.match(r"^ssh://([^@/:\s]+@)?[^@/:\s]+(:\d+)?$", url):
            problems.add(where, name, f"{url!r}: use ssh://[USER@]HOST[:PORT]")
        options = _ssh(ssh, base, problems, where)
    elif ssh is not None and scheme != "ssh":
        problems.add(where, "ssh", f"only for ssh:// endpoints, not {url}")
    if scheme == "unix":
        if not url.startswith("unix:///"):
            problems.add(where, name, f"{url!r}: use unix:///PATH/TO/docker.sock")
    elif scheme not in ("tcp", "ssh", "local"):
        problems.add(where, name, f"{url!r}: unknown scheme; use ssh://, tcp:// (with tls), "
                     "unix:// or local")
        return None
    return Endpoint(url=url, tls=files, ssh=options)


def _tls(raw: object, base: Path, problems: _Problems, where: str) -> TlsFiles | None:
    if not isinstance(raw, dict):
        problems.add(where, "tls", "must be a table: { ca = ..., cert = ..., key = ... }")
        return None
    for key in sorted(set(raw) - {"ca", "cert", "key"}):
        problems.add(where, f"tls.{key}", "unknown field (known: ca, cert, key)")
    files = [_file(raw.get(k), base, problems, where, f"tls.{k}", required=True)
             for k in ("ca", "cert", "key")]
    ca, cert, key = files
    if ca is None or cert is None or key is None:
        return None
    return TlsFiles(ca=ca, cert=cert, key=key)


def _ssh(raw: object, base: Path, problems: _Problems, where: str) -> SshOptions | None:
    if raw is None:
        return SshOptions()
    if not isinstance(raw, dict):
        problems.add(where, "ssh", "must be a table: { identity, known_hosts, config, "
                     "options }")
        return None
    for key in sorted(set(raw) - {"identity", "known_hosts", "config", "options"}):
        problems.add(where, f"ssh.{key}", "unknown field (known: config, identity, "
                     "known_hosts, options)")
    options = raw.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        problems.add(where, "ssh.options", "must be a list of ssh -o values, e.g. "
                     "[\"ProxyJump=bastion\"]")
        options = []
    return SshOptions(identity=_file(raw.get("identity"), base, problems, where,
                                     "ssh.identity"),
                      known_hosts=_file(raw.get("known_hosts"), base, problems, where,
                                        "ssh.known_hosts"),
                      config=_file(raw.get("config"), base, problems, where, "ssh.config"),
                      options=tuple(options))


def parse_size(value: object) -> int | None:
    """Return bytes for ``"512m"``, ``"1g"``, ``"1.5GiB"`` or an integer; None if invalid."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = SIZE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * (1024 ** power))


def _device(name: str, raw: dict[str, Any], base: Path, problems: _Problems,
            where: str) -> DeviceSpec | None:
    endpoint = _endpoint(raw.get("endpoint"), raw.get("tls"), raw.get("ssh"), base,
                         problems, where)
    data = raw.get("data")
    if not isinstance(data, str) or not data:
        problems.add(where, "data", "required: the data's path on the device (a folder, "
                     ".csv or .npz) or builtin:NAME")
    elif not data.startswith(BUILTIN_PREFIX) and not data.startswith("/"):
        problems.add(where, "data", f"{data!r}: give an absolute path on the device")
    image = raw.get("image", "")
    if not isinstance(image, str) or not re.match(r"^[a-z0-9][a-z0-9._/:@-]*$", image):
        problems.add(where, "image", "required: the client image, e.g. "
                     "\"fedfleet-client:0.1.0\" or \"registry.example.org/fedfleet-client:0.1.0\"")
    source = raw.get("source", "auto")
    if source not in SOURCES:
        problems.add(where, "source", f"{source!r}: one of {', '.join(SOURCES)}")
    partition = raw.get("partition")
    if partition is not None and not _partition_ok(partition):
        problems.add(where, "partition", f"{partition!r}: use \"I/N\" with 0 <= I < N, "
                     "e.g. \"0/3\"")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(
            isinstance(v, str) and LABEL_KEY.match(k) for k, v in labels.items()):
        problems.add(where, "labels", "must be a table of string values with keys of "
                     "letters, digits, '.', '_' or '-'")
        labels = {}
    platform = raw.get("platform")
    if platform is not None and not (isinstance(platform, str) and PLATFORM.match(platform)):
        problems.add(where, "platform", f"{platform!r}: linux/amd64, linux/arm64 or "
                     "linux/arm/v7")
    cpus = raw.get("cpus")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float))
                             or cpus <= 0):
        problems.add(where, "cpus", f"{cpus!r}: a positive number, e.g. 1.5")
    memory = _size(raw, "memory", None, problems, where)
    min_memory = _size(raw, "min_memory", 1 << 30, problems, where)
    network = raw.get("network", "bridge")
    if not isinstance(network, str) or not network:
        problems.add(where, "network", "a Docker network name: bridge (default) or host")
    port = raw.get("runtime_port", SUPERNODE_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.add(where, "runtime_port", f"{port!r}: a port number")
    options = _join_options(raw.get("join_options", []), problems, where)
    drain = raw.get("drain_timeout", 120.0)
    if isinstance(drain, bool) or not isinstance(drain, (int, float)) or drain < 0:
        problems.add(where, "drain_timeout", f"{drain!r}: seconds (>= 0)")
    context = raw.get("build_context")
    context_path = None
    if context is not None:
        context_path = base / str(context)
        if not (context_path / "Dockerfile.client").is_file():
            problems.add(where, "build_context", f"{context_path} has no Dockerfile.client "
                         "(give the fedfleet repository's folder)")
    if endpoint is None or any(f"{where}:" in line for line in problems.lines):
        return None
    return DeviceSpec(
        name=name, endpoint=endpoint, data=str(data), image=str(image), source=str(source),
        partition=partition, labels=dict(labels), platform=platform,
        cpus=float(cpus) if cpus is not None else None, memory=memory,
        min_memory=min_memory if min_memory is not None else 1 << 30,
        network=str(network), runtime_port=int(port), join_options=options,
        drain_timeout=float(drain), build_context=context_path)


def _size(raw: Mapping[str, Any], key: str, default: int | None, problems: _Problems,
          where: str) -> int | None:
    if key not in raw:
        return default
    size = parse_size(raw[key])
    if size is None:
        problems.add(where, key, f"{raw[key]!r}: a size such as \"512m\" or \"2g\"")
    return size


def _partition_ok(value: object) -> bool:
    index, sep, total = str(value).partition("/")
    return bool(sep and index.isdigit() and total.isdigit() and int(index) < int(total))


def _join_options(value: object, problems: _Problems, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(where, "join_options", "must be a list of strings, e.g. "
                     "[\"--label-column\", \"class\"]")
        return ()
    for option in value:
        flag = option.split("=", 1)[0]
        if flag in MANAGED_JOIN_OPTIONS:
            problems.add(where, "join_options", f"{flag} is set by fleet deploy; use "
                         f"{MANAGED_JOIN_OPTIONS[flag]} instead")
    return tuple(value)
