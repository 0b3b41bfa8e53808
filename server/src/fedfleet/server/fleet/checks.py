"""Step 1: ask the device's Docker about the device, and check it can run the client."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors

from fedfleet.server.fleet.common import Device, DeviceError
from fedfleet.server.fleet.images import goarch, mb


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


def read_facts(client: docker.DockerClient) -> Facts:
    """Ask the daemon about the device."""
    info = client.info()
    machine = str(info.get("Architecture", "unknown"))
    return Facts(os=str(info.get("OSType", "unknown")), arch=goarch(machine),
                 machine=machine, memory=int(info.get("MemTotal", 0)),
                 cpus=int(info.get("NCPU", 0)), docker=str(info.get("ServerVersion", "?")))


def check(device: Device) -> Facts:
    """Check the device can run the client.

    Raises
    ------
    DeviceError
        Not Linux, another architecture than the inventory pins, too little memory.
    """
    facts = read_facts(device.client)
    spec = device.spec
    if facts.os != "linux":
        raise DeviceError(f"the device's Docker runs {facts.os} containers; the client "
                          "image needs Linux")
    pinned = spec.platform
    if pinned is not None and goarch(pinned.split("/")[1]) != facts.arch:
        raise DeviceError(f"the inventory pins {pinned} but the device is "
                          f"linux/{facts.arch} ({facts.machine}); fix platform")
    if facts.memory and facts.memory < spec.min_memory:
        raise DeviceError(f"the device has {mb(facts.memory)} of memory; the client "
                          f"needs {mb(spec.min_memory)} (min_memory in the inventory)")
    device.say(f"Docker {facts.docker}, linux/{facts.arch}, {facts.cpus} CPUs, "
               f"{mb(facts.memory)}")
    return facts


def free_disk(client: docker.DockerClient, image: str) -> int | None:
    """Return free bytes in Docker's data root, measured in a container of ``image``."""
    try:
        out = client.containers.run(image, ["-Pk", "/"], entrypoint=["df"],
                                    network_mode="none", remove=True, user="0")
        return int(out.decode().splitlines()[-1].split()[3]) * 1024
    except (docker.errors.DockerException, ValueError, IndexError):
        return None
