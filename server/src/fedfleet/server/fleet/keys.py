"""Steps 3-4: the node key made on the device, the CA beside it, the key registered.

A one-shot container of the client image makes the key in the device's key volume;
only the public key is read back. The private key never leaves the device.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from fedfleet.server.fleet.common import Device, DeviceError, control_error
from fedfleet.server.fleet.container import APP_UID, DEVICE_LABEL, ROLE_LABEL, data_mount
from fedfleet.server.fleet.nodes import RegistryError, node_state
from fedfleet.server.fleet.transfer import device_image_id
from fedfleet.shared.errors import FedfleetError

SETUP_SCRIPT = f"""set -e
umask 077
if [ -s /keys/node-key ]; then echo key=kept; else
  fedfleet node-key --out /keys/node-key >/dev/null 2>&1; echo key=created; fi
chown -R {APP_UID}:{APP_UID} /keys
if [ -d /probe ]; then echo data=dir; elif [ -e /probe ]; then echo data=file; fi
fedfleet --version
"""
"""Runs as root in a one-shot container of the client image: makes the node key in
the key volume unless it exists, hands the volume to the image's user, and says
whether the data is a folder or a file and which fedfleet the image holds."""


@dataclass(frozen=True)
class Setup:
    """What the one-shot setup container found or made on the device."""

    public_key: str
    node_id: int | None
    key_created: bool
    data_kind: str  # dir, file or builtin
    version: str


def setup(device: Device, image_id: str) -> Setup:
    """Run the one-shot setup container: node key, ``ca.crt``, data probe, version.

    Registers the key with the server if needed and stores the node ID in the volume.

    Raises
    ------
    DeviceError
        The data path does not exist, the key cannot be made, or the server refuses.
    """
    client, spec = device.client, device.spec
    name = f"{spec.container}-setup"
    device.remove_quietly(name)
    try:
        client.volumes.get(spec.key_volume)
    except docker.errors.NotFound:
        client.volumes.create(spec.key_volume,
                              labels={DEVICE_LABEL: spec.name, ROLE_LABEL: "key"})
    mounts = [Mount(target="/keys", source=spec.key_volume, type="volume")]
    data = data_mount(spec, "/probe")
    if data is not None:
        mounts.append(data)
    try:
        helper = client.containers.create(
            image_id, [SETUP_SCRIPT], entrypoint=["sh", "-c"], user="0", name=name,
            network_mode="none", mounts=mounts,
            labels={DEVICE_LABEL: spec.name, ROLE_LABEL: "setup"})
    except docker.errors.APIError as err:
        text = str(err.explanation or err)
        if "does not exist" in text and spec.data in text:
            raise DeviceError(f"the data path {spec.data} does not exist on the device "
                              "(data in the inventory)") from None
        raise
    try:
        helper.put_archive("/keys", tar_files({"ca.crt": device.fleet.ca_pem}))
        helper.start()
        status = helper.wait(timeout=180)
        output = helper.logs().decode(errors="replace")
        if status.get("StatusCode") != 0:
            last = [line for line in output.splitlines() if line.strip()][-1:]
            raise DeviceError(f"making the node key on the device failed: "
                              f"{last[0] if last else 'exit ' + str(status)}")
        created = "key=created" in output
        device.say("node key created on the device" if created else "node key kept")
        public = read_file(helper, "/keys/node-key.pub").decode().strip()
        stored = read_file(helper, "/keys/node-id", missing_ok=True).decode().strip()
        node_id = register(device, public, int(stored) if stored.isdigit() else None)
        if str(node_id) != stored:
            helper.put_archive("/keys", tar_files({"node-id": f"{node_id}\n".encode()}))
    finally:
        helper.remove(force=True)
    found = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    version = re.search(r"version (\S+)", output)
    return Setup(public_key=public, node_id=node_id, key_created=created,
                 data_kind=found.get("data", "builtin"),
                 version=version.group(1) if version else "unknown")


def register(device: Device, public_key: str, node_id: int | None) -> int:
    """Return the device's node ID, registering its key if the server lacks it.

    Raises
    ------
    DeviceError
        The node was revoked, the key is known under a lost ID, or the server refuses.
    """
    registry, name = device.fleet.registry, device.spec.name
    try:
        if node_id is not None:
            state = node_state(registry, node_id, fresh=True)
            if state.revoked:
                raise device.revoked(node_id)
            if state.status is not None:
                return node_id
        new_id = registry.register(public_key, name)
    except RegistryError as err:
        if "already in use" in str(err):
            raise DeviceError(
                f"the server knows device {name}'s key under a node ID this device lost; "
                f"run 'fedfleet fleet remove {name}' (then revoke the old node with "
                "'fedfleet nodes revoke') and deploy again") from None
        raise DeviceError(f"registering the key with the server failed: {err}") from None
    except DeviceError:
        raise
    except FedfleetError as err:
        raise control_error(err) from None
    device.say(f"registered with the server as node {new_id}")
    return new_id


def stored_node_id(device: Device) -> int | None:
    """Read the node ID from the key volume (needs the client image on the device)."""
    client, spec = device.client, device.spec
    image = device_image_id(client, spec.image)
    if image is None:
        return None
    helper = client.containers.create(
        image, [], entrypoint=["true"], network_mode="none",
        mounts=[Mount(target="/keys", source=spec.key_volume, type="volume",
                      read_only=True)],
        labels={DEVICE_LABEL: spec.name, ROLE_LABEL: "setup"})
    try:
        text = read_file(helper, "/keys/node-id", missing_ok=True).decode().strip()
    finally:
        helper.remove(force=True)
    return int(text) if text.isdigit() else None


def tar_files(files: dict[str, bytes]) -> bytes:
    """Return a tar of ``files`` owned by the image's user, readable by everyone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, APP_UID, APP_UID
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_file(container: Any, path: str, missing_ok: bool = False) -> bytes:
    """Return one small file from ``container`` (running or not) through the archive API."""
    try:
        chunks, _ = container.get_archive(path)
    except docker.errors.NotFound:
        if missing_ok:
            return b""
        raise DeviceError(f"{path} is missing on the device") from None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        return handle.read() if handle is not None else b""
