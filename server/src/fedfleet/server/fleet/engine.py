"""The engine: bring one device to the state its inventory entry describes.

It works through any ``docker.DockerClient`` (how the client reaches the device is
the channels' business), in idempotent steps:

1. check the daemon: reachable, Linux, architecture, memory, free disk;
2. the client image: already there (same image ID), or pulled, streamed or built;
3. the node key, made on the device in a one-shot container of the client image,
   into the device's key volume; only the public key is read back. ``ca.crt`` and the
   node ID go into the same volume;
4. the key registered with the server;
5. the client container: created from the image *ID*, key volume and data read-only,
   limits, restart policy, healthcheck and labels (device, version, inventory hash).

A device whose container carries the same inventory hash, runs, and is registered is
left alone. A container that must change is switched only while the device is idle
(``activity.json`` of ``fedfleet join``), and the new one must become healthy and
online on the server within a bounded time, or the old one is put back.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Mount

from fedfleet.server.fleet.images import (
    ImageError,
    LocalImages,
    build,
    goarch,
    is_registry_ref,
    pull,
    split_ref,
    transfer,
)
from fedfleet.server.fleet.inventory import DeviceSpec, ServerSpec
from fedfleet.server.fleet.registry import NodeRegistry, RegistryError
from fedfleet.shared.constants import ACTIVITY_FILE, BUILTIN_PREFIX
from fedfleet.shared.errors import FedfleetError

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


class DeviceError(FedfleetError):
    """The device cannot be brought to its desired state; the message says why."""


@dataclass(frozen=True)
class Facts:
    """What the device's daemon says about the device."""

    os: str
    arch: str
    machine: str
    memory: int
    cpus: int
    docker: str
    free_disk: int | None = None


@dataclass
class Outcome:
    """How one device ended: ``ok``, whether anything ``changed``, and a summary line."""

    device: str
    ok: bool
    changed: bool
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    """What every device of a deploy shares: the server, its CA, and image sources."""

    server: ServerSpec
    ca_pem: bytes
    registry: NodeRegistry
    local: LocalImages
    build_on_device: bool = False
    ready_timeout: float = 180.0
    idle_timeout: float = 600.0


@dataclass(frozen=True)
class Setup:
    """What the one-shot setup container found or made on the device."""

    public_key: str
    node_id: int | None
    key_created: bool
    data_kind: str  # dir, file or builtin
    version: str


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


class DeviceEngine:
    """Brings the device ``spec`` to its desired state through ``client``."""

    def __init__(self, client: docker.DockerClient, spec: DeviceSpec, fleet: Fleet,
                 say: Callable[[str], None] = lambda text: None) -> None:
        """Work on ``spec`` through ``client``; report progress through ``say``."""
        self.client = client
        self.spec = spec
        self.fleet = fleet
        self.say = say

    # -- 1. the daemon -----------------------------------------------------------------

    def facts(self) -> Facts:
        """Ask the daemon about the device."""
        info = self.client.info()
        machine = str(info.get("Architecture", "unknown"))
        return Facts(os=str(info.get("OSType", "unknown")), arch=goarch(machine),
                     machine=machine, memory=int(info.get("MemTotal", 0)),
                     cpus=int(info.get("NCPU", 0)), docker=str(info.get("ServerVersion", "?")))

    def check(self) -> Facts:
        """Check the device can run the client.

        Raises
        ------
        DeviceError
            Not Linux, another architecture than the inventory pins, too little memory.
        """
        facts = self.facts()
        if facts.os != "linux":
            raise DeviceError(f"the device's Docker runs {facts.os} containers; the client "
                              "image needs Linux")
        pinned = self.spec.platform
        if pinned is not None and goarch(pinned.split("/")[1]) != facts.arch:
            raise DeviceError(f"the inventory pins {pinned} but the device is "
                              f"linux/{facts.arch} ({facts.machine}); fix platform")
        if facts.memory and facts.memory < self.spec.min_memory:
            raise DeviceError(f"the device has {_mb(facts.memory)} of memory; the client "
                              f"needs {_mb(self.spec.min_memory)} (min_memory in the "
                              "inventory)")
        self.say(f"Docker {facts.docker}, linux/{facts.arch}, {facts.cpus} CPUs, "
                 f"{_mb(facts.memory)}")
        return facts

    def free_disk(self, image: str) -> int | None:
        """Return free bytes in Docker's data root, measured in a container of ``image``."""
        try:
            out = self.client.containers.run(image, ["-Pk", "/"], entrypoint=["df"],
                                             network_mode="none", remove=True, user="0")
            return int(out.decode().splitlines()[-1].split()[3]) * 1024
        except (docker.errors.DockerException, ValueError, IndexError):
            return None

    # -- 2. the image ------------------------------------------------------------------

    def source(self) -> str:
        """Return how the image gets here: local, registry or build."""
        if self.fleet.build_on_device or self.spec.source == "build":
            return "build"
        if self.spec.source == "auto":
            return "registry" if is_registry_ref(self.spec.image) else "local"
        return self.spec.source

    def _device_image_id(self, ref: str) -> str | None:
        try:
            return str(self.client.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def ensure_image(self, facts: Facts) -> str:
        """Get the client image onto the device; return its ID there.

        Raises
        ------
        DeviceError
            Wrong architecture, not enough disk, or the transfer/pull/build failed.
        """
        ref, source = self.spec.image, self.source()
        try:
            if source == "build":
                context = self.spec.build_context
                if context is None:
                    raise DeviceError("--build-on-device needs build_context in the "
                                      "inventory (the fedfleet repository's folder)")
                image_id = build(self.client, context, ref, self.spec.network, self.say)
            elif source == "registry":
                image_id = pull(self.client, ref, self.say)
            else:
                image_id = self._send_local(ref, facts)
        except ImageError as err:
            raise DeviceError(str(err)) from None
        arch = goarch(str(self.client.api.inspect_image(image_id).get("Architecture", "")))
        if arch and arch != facts.arch:
            raise DeviceError(f"{ref} on the device is linux/{arch}, the device "
                              f"linux/{facts.arch}")
        return image_id

    def _send_local(self, ref: str, facts: Facts) -> str:
        local = self.fleet.local.get(ref)
        if local.arch != facts.arch:
            raise DeviceError(
                f"the local image {ref} is {local.os}/{local.arch} but the device is "
                f"linux/{facts.arch} ({facts.machine}): build it there with "
                "--build-on-device, or push a multi-arch image to a registry")
        if self._device_image_id(local.id) == local.id:
            if self._device_image_id(ref) != local.id:
                repo, tag = split_ref(ref)
                self.client.api.tag(local.id, repo, tag)
            self.say(f"image {ref} ({local.id[7:19]}) already there")
            return local.id
        probe = next((i for i in (ref, f"{split_ref(ref)[0]}:{PREVIOUS_TAG}")
                      if self._device_image_id(i)), None)
        free = self.free_disk(probe) if probe else None
        if free is not None and free < local.size * 1.2:
            raise DeviceError(f"not enough disk space on the device: {_mb(free)} free in "
                              f"Docker's data root, {ref} needs ~{_mb(local.size * 1.2)}; "
                              "free space there (docker image prune)")
        transfer(self.fleet.local, local, self.client, self.say)
        return local.id

    # -- 3./4. key, CA, registration ---------------------------------------------------

    def _data_mount(self, target: str) -> Mount | None:
        if self.spec.data.startswith(BUILTIN_PREFIX):
            return None
        return Mount(target=target, source=self.spec.data, type="bind", read_only=True)

    def _remove_quietly(self, name: str) -> None:
        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

    def setup(self, image_id: str) -> Setup:
        """Run the one-shot setup container: node key, ``ca.crt``, data probe, version.

        Registers the key with the server if needed and stores the node ID in the volume.

        Raises
        ------
        DeviceError
            The data path does not exist, the key cannot be made, or the server refuses.
        """
        spec = self.spec
        name = f"{spec.container}-setup"
        self._remove_quietly(name)
        labels = {DEVICE_LABEL: spec.name, ROLE_LABEL: "key"}
        try:
            self.client.volumes.get(spec.key_volume)
        except docker.errors.NotFound:
            self.client.volumes.create(spec.key_volume, labels=labels)
        mounts = [Mount(target="/keys", source=spec.key_volume, type="volume")]
        data = self._data_mount("/probe")
        if data is not None:
            mounts.append(data)
        try:
            helper = self.client.containers.create(
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
            helper.put_archive("/keys", _tar({"ca.crt": self.fleet.ca_pem}))
            helper.start()
            status = helper.wait(timeout=180)
            output = helper.logs().decode(errors="replace")
            if status.get("StatusCode") != 0:
                last = [line for line in output.splitlines() if line.strip()][-1:]
                raise DeviceError(f"making the node key on the device failed: "
                                  f"{last[0] if last else 'exit ' + str(status)}")
            created = "key=created" in output
            self.say("node key created on the device" if created else "node key kept")
            public = _read(helper, "/keys/node-key.pub").decode().strip()
            stored = _read(helper, "/keys/node-id", missing_ok=True).decode().strip()
            node_id = self._registered(public, int(stored) if stored.isdigit() else None)
            if str(node_id) != stored:
                helper.put_archive("/keys", _tar({"node-id": f"{node_id}\n".encode()}))
        finally:
            helper.remove(force=True)
        found = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
        version = re.search(r"version (\S+)", output)
        return Setup(public_key=public, node_id=node_id, key_created=created,
                     data_kind=found.get("data", "builtin"),
                     version=version.group(1) if version else "unknown")

    def _registered(self, public_key: str, node_id: int | None) -> int:
        """Return the device's node ID, registering its key if the server lacks it."""
        registry = self.fleet.registry
        try:
            if node_id is not None:
                status = registry.nodes(fresh=True).get(node_id, {}).get("status")
                if status == "unregistered":
                    raise DeviceError(
                        f"node {node_id} of device {self.spec.name} was revoked on the "
                        f"server; run 'fedfleet fleet remove {self.spec.name}' and deploy "
                        "again to give it a new key")
                if status is not None:
                    return node_id
            new_id = registry.register(public_key, self.spec.name)
        except RegistryError as err:
            if "already in use" in str(err):
                raise DeviceError(
                    f"the server knows device {self.spec.name}'s key under a node ID this "
                    f"device lost; run 'fedfleet fleet remove {self.spec.name}' (then "
                    "revoke the old node with 'fedfleet nodes revoke') and deploy again"
                ) from None
            raise DeviceError(f"registering the key with the server failed: {err}") from None
        except FedfleetError as err:
            if isinstance(err, DeviceError):
                raise
            raise DeviceError(f"the server's Control API: {err}") from None
        self.say(f"registered with the server as node {new_id}")
        return new_id

    # -- 5. the container --------------------------------------------------------------

    def inventory_hash(self, image_id: str) -> str:
        """Hash what the inventory asks of this device, with the image ID and the CA."""
        spec = asdict(self.spec)
        for where in ("endpoint", "name"):
            spec.pop(where)
        spec["build_context"] = None
        spec["image_id"] = image_id
        spec["server"] = self.fleet.server.address
        spec["ca"] = hashlib.sha256(self.fleet.ca_pem).hexdigest()
        spec["format"] = ENGINE_FORMAT
        blob = json.dumps(spec, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def container_config(self, image_id: str, setup: Setup, digest: str) -> dict[str, Any]:
        """Return ``containers.create`` arguments for the client container."""
        spec = self.spec
        data = spec.data
        mounts = [Mount(target=KEY_DIR, source=spec.key_volume, type="volume",
                        read_only=True),
                  Mount(target=HOME_DIR, source=spec.home_volume, type="volume",
                        labels={DEVICE_LABEL: spec.name, ROLE_LABEL: "home"})]
        if setup.data_kind in ("dir", "file"):
            inside = DATA_DIR if setup.data_kind == "dir" else \
                f"{DATA_DIR}/{spec.data.rstrip('/').rsplit('/', 1)[-1]}"
            mount = self._data_mount(inside)
            assert mount is not None
            mounts.append(mount)
            data = inside
        env = {"FEDFLEET_JOIN_HOME": CLIENT_HOME,
               "FEDFLEET_JOIN_RUNTIME_PORT": str(spec.runtime_port),
               "FEDFLEET_JOIN_DATA_RETRY": "60",
               "FEDFLEET_JOIN_DRAIN_TIMEOUT": f"{spec.drain_timeout:g}"}
        for command in ("JOIN", "DOCTOR"):  # so 'fleet exec NAME -- doctor' needs no flags
            env.update({f"FEDFLEET_{command}_SERVER": self.fleet.server.address,
                        f"FEDFLEET_{command}_ROOT_CERTIFICATES": f"{KEY_DIR}/ca.crt",
                        f"FEDFLEET_{command}_NODE_KEY": f"{KEY_DIR}/node-key",
                        f"FEDFLEET_{command}_DATA": data})
        if spec.partition:
            env["FEDFLEET_JOIN_PARTITION"] = spec.partition
        labels = {f"{LABEL}.label.{k}": v for k, v in spec.labels.items()}
        labels.update({DEVICE_LABEL: spec.name, ROLE_LABEL: "client",
                       VERSION_LABEL: setup.version, HASH_LABEL: digest,
                       NODE_LABEL: str(setup.node_id), IMAGE_LABEL: spec.image})
        second = 1_000_000_000
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
                            "interval": 5 * second, "timeout": 5 * second,
                            "start_period": 120 * second, "retries": 3}}
        if spec.cpus is not None:
            config["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory is not None:
            config["mem_limit"] = spec.memory
        return config

    def current(self) -> Any:
        """Return the device's client container, or None."""
        try:
            return self.client.containers.get(self.spec.container)
        except docker.errors.NotFound:
            return None

    def apply(self) -> Outcome:
        """Bring the device to its desired state (deploy and update share this).

        Raises
        ------
        DeviceError
            With the reason; a container that failed its gate was replaced by the old one.
        """
        started = time.monotonic()
        facts = self.check()
        image_id = self.ensure_image(facts)
        digest = self.inventory_hash(image_id)
        current = self.current()
        status = self._up_to_date(current, digest) if current is not None else None
        if status is not None:
            node = current.labels.get(NODE_LABEL)
            return Outcome(self.spec.name, True, False,
                           f"up to date: {self.spec.image} ({image_id[7:19]}), node {node} "
                           f"{status}; nothing changed", time.monotonic() - started)
        setup = self.setup(image_id)
        config = self.container_config(image_id, setup, digest)
        old = current.image.id if current is not None else None
        self._switch(current, config, setup.node_id)
        verb = "deployed" if old is None else \
            "updated" if old != image_id else "reconfigured"
        change = f" (was {old[7:19]})" if old is not None and old != image_id else ""
        return Outcome(self.spec.name, True, True,
                       f"{verb}: {self.spec.image} ({image_id[7:19]}){change}, healthy and "
                       f"online as node {setup.node_id}", time.monotonic() - started,
                       {"node_id": setup.node_id, "image_id": image_id})

    def _up_to_date(self, container: Any, digest: str) -> str | None:
        """Return the node's status if ``container`` needs no change, else None."""
        if container.labels.get(HASH_LABEL) != digest or container.status != "running":
            return None
        node = container.labels.get(NODE_LABEL, "")
        if not node.isdigit():
            return None
        try:
            status = self.fleet.registry.nodes().get(int(node), {}).get("status")
        except FedfleetError as err:
            raise DeviceError(f"the server's Control API: {err}") from None
        if status == "unregistered":
            raise DeviceError(f"node {node} of device {self.spec.name} was revoked on the "
                              f"server; run 'fedfleet fleet remove {self.spec.name}' and "
                              "deploy again to give it a new key")
        return None if status is None else str(status)

    def _switch(self, current: Any, config: dict[str, Any], node_id: int | None) -> None:
        """Replace ``current`` by a container made from ``config``; roll back on failure."""
        name = self.spec.container
        before = None
        if node_id is not None:
            before = self.fleet.registry.nodes(fresh=True).get(node_id, {}).get("online-at")
        previous_name = f"{name}-previous"
        self._remove_quietly(previous_name)
        if current is not None:
            if current.status == "running":
                self.wait_idle(current)
            self._keep_previous_image(current)
            current.rename(previous_name)
            self.say("stopping the old container")
            current.stop(timeout=int(self.spec.drain_timeout) + 10)
        new = None
        try:
            new = self._create(config)
            new.start()
            self.say("started; waiting until healthy and online")
            self.wait_ready(new, node_id, before)
        except (DeviceError, docker.errors.APIError) as err:
            reason = str(err) if isinstance(err, DeviceError) else \
                f"the device refused the container: {err.explanation or err}"
            if new is not None:
                new.remove(force=True)
            if current is None:
                raise DeviceError(reason) from None
            current.rename(name)
            current.start()
            raise DeviceError(f"{reason}; rolled back to the previous container "
                              f"({current.image.id[7:19]})") from None
        if current is not None:
            current.remove(force=True)

    HOST_CONFIG = ("mounts", "restart_policy", "network_mode", "init", "nano_cpus",
                   "mem_limit", "log_config")

    def _create(self, config: dict[str, Any]) -> Any:
        """Create the container (low-level API: the high-level one drops stop_timeout)."""
        host = self.client.api.create_host_config(
            **{k: v for k, v in config.items() if k in self.HOST_CONFIG})
        params = {k: v for k, v in config.items() if k not in self.HOST_CONFIG}
        created = self.client.api.create_container(host_config=host, **params)
        return self.client.containers.get(created["Id"])

    def _keep_previous_image(self, current: Any) -> None:
        repo, _ = split_ref(self.spec.image)
        try:
            self.client.api.tag(current.image.id, repo, PREVIOUS_TAG)
        except docker.errors.APIError:
            pass

    def activity(self, container: Any) -> dict[str, Any] | None:
        """Return the client's ``activity.json`` (idle/busy), or None if unreadable."""
        try:
            result = container.exec_run(["cat", f"{CLIENT_HOME}/{ACTIVITY_FILE}"])
        except docker.errors.APIError:
            return None
        if result.exit_code != 0:
            return None
        try:
            value = json.loads(result.output)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def wait_idle(self, container: Any, timeout: float | None = None) -> None:
        """Wait until the device is not answering a message.

        Raises
        ------
        DeviceError
            If it is still busy after ``timeout`` seconds.
        """
        timeout = self.fleet.idle_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        said = False
        while True:
            state = self.activity(container)
            if state is None:
                self.say("cannot read the client's activity (an older image?); switching")
                return
            if state.get("state") != "busy":
                return
            where = _message(state)
            if time.monotonic() > deadline:
                raise DeviceError(f"still answering {where} after {timeout:.0f}s; not "
                                  "switched (try again between rounds)")
            if not said:
                self.say(f"waiting for the device to answer {where}")
                said = True
            time.sleep(0.5)

    def wait_ready(self, container: Any, node_id: int | None, before: str | None,
                   timeout: float | None = None) -> None:
        """Wait until ``container`` is healthy and its node is online (newly).

        Raises
        ------
        DeviceError
            If it exits, restarts, turns unhealthy, or is not online within ``timeout``.
        """
        timeout = self.fleet.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        health, node_status = "starting", "unknown"
        while time.monotonic() < deadline:
            container.reload()
            state = container.attrs["State"]
            health = state.get("Health", {}).get("Status", "none")
            if state.get("Status") in ("exited", "dead") or container.attrs.get(
                    "RestartCount", 0) > 0 or state.get("Restarting"):
                raise DeviceError(f"the client container stopped: {self._last_error(container)}")
            if health == "unhealthy":
                raise DeviceError(f"the client container is unhealthy: "
                                  f"{self._last_error(container)}")
            if health == "healthy":
                if node_id is None:
                    return
                node = self.fleet.registry.nodes(fresh=True).get(node_id, {})
                node_status = str(node.get("status", "not registered"))
                if node_status == "online" and node.get("online-at") != before:
                    return
            time.sleep(2)
        raise DeviceError(f"not healthy and online within {timeout:.0f}s (container "
                          f"{health}, node {node_id} {node_status}): "
                          f"{self._last_error(container)}")

    @staticmethod
    def _last_error(container: Any) -> str:
        try:
            lines = container.logs(tail=50).decode(errors="replace").splitlines()
        except docker.errors.APIError:
            return "no logs"
        errors = [line for line in lines if line.startswith("Error:") or "ERROR" in line]
        chosen = (errors or [line for line in lines if line.strip()] or ["no output"])[-1]
        return f"last log line: {chosen.strip()[:300]}"

    # -- status and removal ------------------------------------------------------------

    def status(self, nodes: dict[int, dict[str, Any]],
               rounds: dict[str, tuple[int, int]],
               taken: dict[str, tuple[int, int, int]] | None = None) -> dict[str, Any]:
        """Return one status row: container, health, image, node, online, last round.

        ``taken``: per node (run ID, rounds contributed to, rounds asked in), shown
        as ``rounds`` ("3/4") with ``rounds_run``.
        """
        row: dict[str, Any] = {"device": self.spec.name, "endpoint": self.spec.endpoint.url,
                               "reachable": True}
        container = self.current()
        if container is None:
            row["container"] = "absent"
            return row
        attrs = container.attrs
        state = attrs["State"]
        labels = container.labels
        row.update(container=state.get("Status"),
                   health=state.get("Health", {}).get("Status", "none"),
                   image=labels.get(IMAGE_LABEL), version=labels.get(VERSION_LABEL),
                   image_id=str(attrs.get("Image", ""))[7:19],
                   restarts=int(attrs.get("RestartCount", 0)),
                   inventory_hash=labels.get(HASH_LABEL))
        try:
            digests = self.client.api.inspect_image(attrs["Image"]).get("RepoDigests") or []
            row["digest"] = digests[0].split("@", 1)[1][:19] if digests else None
        except docker.errors.APIError:
            row["digest"] = None
        if state.get("Running"):
            started = _parse_time(state.get("StartedAt", ""))
            row["uptime_s"] = int(time.time() - started) if started else None
            activity = self.activity(container)
            if activity is not None:
                row["activity"] = activity.get("state")
                if activity.get("state") == "busy":
                    row["activity"] = f"busy ({_message(activity, short=True)})"
        node = labels.get(NODE_LABEL, "")
        if node.isdigit():
            row["node_id"] = node
            row["online"] = nodes.get(int(node), {}).get("status", "not registered")
            last = rounds.get(node)
            row["last_round"] = f"{last[1]} (run {last[0]})" if last else None
            share = (taken or {}).get(node)
            if share is not None:
                row["rounds"] = f"{share[1]}/{share[2]}"
                row["rounds_run"] = share[0]
        return row

    def remove(self) -> Outcome:
        """Stop and remove the client container, revoke its node, remove its volumes.

        Raises
        ------
        DeviceError
            If the server cannot revoke the node (the key volume is kept for a retry).
        """
        started = time.monotonic()
        spec = self.spec
        done: list[str] = []
        node_id: int | None = None
        current = self.current()
        if current is not None:
            label = current.labels.get(NODE_LABEL, "")
            node_id = int(label) if label.isdigit() else None
            self.say("stopping the container")
            current.stop(timeout=int(spec.drain_timeout) + 10)
            current.remove(force=True)
            done.append("container removed")
        for leftover in (f"{spec.container}-previous", f"{spec.container}-setup"):
            self._remove_quietly(leftover)
        volume = self._volume()
        if node_id is None and volume is not None:
            node_id = self._stored_node_id()
        if node_id is not None:
            try:
                status = self.fleet.registry.nodes(fresh=True).get(node_id, {}).get("status")
                if status not in (None, "unregistered"):
                    self.fleet.registry.revoke(node_id)
                    done.append(f"node {node_id} revoked")
                else:
                    done.append(f"node {node_id} was not registered")
            except FedfleetError as err:
                raise DeviceError(f"container removed, but revoking node {node_id} failed "
                                  f"({err}); the key volume is kept: run remove again"
                                  ) from None
        if volume is not None:
            volume.remove(force=True)
            done.append("key volume removed")
        home = self._volume(spec.home_volume)
        if home is not None:
            home.remove(force=True)
            done.append("home volume removed (with the models the device received)")
        if not done:
            return Outcome(spec.name, True, False, "nothing to remove",
                           time.monotonic() - started)
        return Outcome(spec.name, True, True, "; ".join(done), time.monotonic() - started)

    def _volume(self, name: str | None = None) -> Any:
        try:
            return self.client.volumes.get(name or self.spec.key_volume)
        except docker.errors.NotFound:
            return None

    def _stored_node_id(self) -> int | None:
        """Read the node ID from the key volume (needs the client image on the device)."""
        image = self._device_image_id(self.spec.image)
        if image is None:
            return None
        helper = self.client.containers.create(
            image, [], entrypoint=["true"], network_mode="none",
            mounts=[Mount(target="/keys", source=self.spec.key_volume, type="volume",
                          read_only=True)],
            labels={DEVICE_LABEL: self.spec.name, ROLE_LABEL: "setup"})
        try:
            text = _read(helper, "/keys/node-id", missing_ok=True).decode().strip()
        finally:
            helper.remove(force=True)
        return int(text) if text.isdigit() else None


def _message(activity: dict[str, Any], short: bool = False) -> str:
    """Describe the message a busy device is answering, from its activity.json."""
    kind = activity.get("message_type") or "a"
    where = f"round {activity['round']}" if activity.get("round") else ""
    if short:
        return " ".join(filter(None, [kind, where])) or "message"
    return " ".join(filter(None, [f"its {kind} message", where and f"of {where}",
                                  f"in run {activity.get('run_id')}"]))


def _tar(files: dict[str, bytes]) -> bytes:
    """Return a tar of ``files`` owned by the image's user, readable by everyone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, APP_UID, APP_UID
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(container: Any, path: str, missing_ok: bool = False) -> bytes:
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


def _parse_time(text: str) -> float | None:
    """Parse Docker's RFC 3339 time (nanoseconds allowed) to a Unix time."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", text)
    if match is None or text.startswith("0001-"):
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=timezone.utc).timestamp()
