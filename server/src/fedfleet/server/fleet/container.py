"""The desired client container as pure data: names, labels, mounts, limits, its hash.

Nothing here talks to Docker: the same inventory entry, image ID, CA and setup give
the same ``create`` arguments and the same inventory hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from docker.types import LogConfig, Mount

from fedfleet.server.fleet.specs import DeviceSpec
from fedfleet.shared.constants import BUILTIN_PREFIX

if TYPE_CHECKING:
    from fedfleet.server.fleet.keys import Setup

LABEL = "org.fedfleet"
DEVICE_LABEL, ROLE_LABEL = f"{LABEL}.device", f"{LABEL}.role"
VERSION_LABEL, HASH_LABEL = f"{LABEL}.version", f"{LABEL}.inventory-hash"
NODE_LABEL, IMAGE_LABEL = f"{LABEL}.node-id", f"{LABEL}.image"
KEY_DIR = "/run/secrets/fedfleet"
DATA_DIR = "/data"
HOME_DIR = "/app/.fedfleet"
"""Where the client image keeps the device's fedfleet home (a volume of its own)."""
CLIENT_HOME = f"{HOME_DIR}/client"
APP_UID = 49999
PREVIOUS_TAG = "fedfleet-previous"
ENGINE_FORMAT = 1
"""Part of the inventory hash: bump when the container layout changes."""
HOST_CONFIG = ("mounts", "restart_policy", "network_mode", "init", "nano_cpus",
               "mem_limit", "log_config")
"""The ``create`` arguments that go into the host config (see :func:`split_config`)."""
SECOND = 1_000_000_000


def data_mount(spec: DeviceSpec, target: str) -> Mount | None:
    """Return the read-only bind mount of the device's data at ``target`` (None: builtin)."""
    if spec.data.startswith(BUILTIN_PREFIX):
        return None
    return Mount(target=target, source=spec.data, type="bind", read_only=True)


def inventory_hash(spec: DeviceSpec, server: str, ca_pem: bytes, image_id: str) -> str:
    """Hash what the inventory asks of this device, with the image ID and the CA."""
    fields = asdict(spec)
    for where in ("endpoint", "name"):
        fields.pop(where)
    fields["build_context"] = None
    fields["image_id"] = image_id
    fields["server"] = server
    fields["ca"] = hashlib.sha256(ca_pem).hexdigest()
    fields["format"] = ENGINE_FORMAT
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def container_config(spec: DeviceSpec, server: str, image_id: str, setup: Setup,
                     digest: str) -> dict[str, Any]:
    """Return ``containers.create`` arguments for the client container."""
    data = spec.data
    mounts = [Mount(target=KEY_DIR, source=spec.key_volume, type="volume", read_only=True),
              Mount(target=HOME_DIR, source=spec.home_volume, type="volume",
                    labels={DEVICE_LABEL: spec.name, ROLE_LABEL: "home"})]
    if setup.data_kind in ("dir", "file"):
        inside = DATA_DIR if setup.data_kind == "dir" else \
            f"{DATA_DIR}/{spec.data.rstrip('/').rsplit('/', 1)[-1]}"
        mount = data_mount(spec, inside)
        assert mount is not None
        mounts.append(mount)
        data = inside
    env = {"FEDFLEET_JOIN_HOME": CLIENT_HOME,
           "FEDFLEET_JOIN_RUNTIME_PORT": str(spec.runtime_port),
           "FEDFLEET_JOIN_DATA_RETRY": "60",
           "FEDFLEET_JOIN_DRAIN_TIMEOUT": f"{spec.drain_timeout:g}"}
    for command in ("JOIN", "DOCTOR"):  # so 'fleet exec NAME -- doctor' needs no flags
        env.update({f"FEDFLEET_{command}_SERVER": server,
                    f"FEDFLEET_{command}_ROOT_CERTIFICATES": f"{KEY_DIR}/ca.crt",
                    f"FEDFLEET_{command}_NODE_KEY": f"{KEY_DIR}/node-key",
                    f"FEDFLEET_{command}_DATA": data})
    if spec.partition:
        env["FEDFLEET_JOIN_PARTITION"] = spec.partition
    labels = {f"{LABEL}.label.{k}": v for k, v in spec.labels.items()}
    labels.update({DEVICE_LABEL: spec.name, ROLE_LABEL: "client",
                   VERSION_LABEL: setup.version, HASH_LABEL: digest,
                   NODE_LABEL: str(setup.node_id), IMAGE_LABEL: spec.image})
    config: dict[str, Any] = {
        "image": image_id, "command": ["join", *spec.join_options],
        "name": spec.container, "environment": env, "labels": labels, "mounts": mounts,
        "init": True, "network_mode": spec.network,
        "restart_policy": {"Name": "unless-stopped"}, "stop_signal": "SIGTERM",
        "stop_timeout": int(spec.drain_timeout) + 15,
        "log_config": LogConfig(type="json-file", config={"max-size": "10m",
                                                          "max-file": "3"}),
        "healthcheck": {"test": ["CMD", "python", "-m", "fedfleet.shared.health",
                                 "client", str(spec.runtime_port)],
                        "interval": 5 * SECOND, "timeout": 5 * SECOND,
                        "start_period": 120 * SECOND, "retries": 3}}
    if spec.cpus is not None:
        config["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.memory is not None:
        config["mem_limit"] = spec.memory
    return config


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(host config, container parameters)`` for the low-level create call."""
    host = {k: v for k, v in config.items() if k in HOST_CONFIG}
    return host, {k: v for k, v in config.items() if k not in HOST_CONFIG}


def node_label(labels: dict[str, str]) -> int | None:
    """Return the node ID a container's labels carry, or None."""
    node = labels.get(NODE_LABEL, "")
    return int(node) if node.isdigit() else None
