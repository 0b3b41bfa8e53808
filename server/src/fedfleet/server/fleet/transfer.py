"""Step 2: get the client image onto the device: pulled, streamed from here, or built there.

An image the device already holds (same ID) is only tagged; a stream is refused
before it starts when the device's disk cannot take it.
"""

from __future__ import annotations

import docker
import docker.errors

from fedfleet.server.fleet.checks import Facts, free_disk
from fedfleet.server.fleet.common import Device, DeviceError, short_id
from fedfleet.server.fleet.container import PREVIOUS_TAG
from fedfleet.server.fleet.images import (
    ImageError,
    build,
    goarch,
    is_registry_ref,
    mb,
    pull,
    split_ref,
    transfer,
)

DISK_MARGIN = 1.2
"""Free disk a streamed image needs, as a multiple of its size."""


def image_source(device: Device) -> str:
    """Return how the image gets here: local, registry or build."""
    spec = device.spec
    if device.fleet.build_on_device or spec.source == "build":
        return "build"
    if spec.source == "auto":
        return "registry" if is_registry_ref(spec.image) else "local"
    return spec.source


def device_image_id(client: docker.DockerClient, ref: str) -> str | None:
    """Return the ID of image ``ref`` on the device, or None if it has none."""
    try:
        return str(client.api.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        return None


def ensure_image(device: Device, facts: Facts) -> str:
    """Get the client image onto the device; return its ID there.

    Raises
    ------
    DeviceError
        Wrong architecture, not enough disk, or the transfer/pull/build failed.
    """
    client, ref, source = device.client, device.spec.image, image_source(device)
    try:
        if source == "build":
            context = device.spec.build_context
            if context is None:
                raise DeviceError("--build-on-device needs build_context in the "
                                  "inventory (the fedfleet repository's folder)")
            image_id = build(client, context, ref, device.spec.network, device.say)
        elif source == "registry":
            image_id = pull(client, ref, device.say)
        else:
            image_id = _send_local(device, facts)
    except ImageError as err:
        raise DeviceError(str(err)) from None
    arch = goarch(str(client.api.inspect_image(image_id).get("Architecture", "")))
    if arch and arch != facts.arch:
        raise DeviceError(f"{ref} on the device is linux/{arch}, the device "
                          f"linux/{facts.arch}")
    return image_id


def _send_local(device: Device, facts: Facts) -> str:
    """Stream this machine's image to the device unless it is there; return its ID."""
    client, ref = device.client, device.spec.image
    local = device.fleet.local.get(ref)
    if local.arch != facts.arch:
        raise DeviceError(
            f"the local image {ref} is {local.os}/{local.arch} but the device is "
            f"linux/{facts.arch} ({facts.machine}): build it there with "
            "--build-on-device, or push a multi-arch image to a registry")
    if device_image_id(client, local.id) == local.id:
        if device_image_id(client, ref) != local.id:
            repo, tag = split_ref(ref)
            client.api.tag(local.id, repo, tag)
        device.say(f"image {ref} ({short_id(local.id)}) already there")
        return local.id
    probe = next((i for i in (ref, f"{split_ref(ref)[0]}:{PREVIOUS_TAG}")
                  if device_image_id(client, i)), None)
    free = free_disk(client, probe) if probe else None
    if free is not None and free < local.size * DISK_MARGIN:
        raise DeviceError(f"not enough disk space on the device: {mb(free)} free in "
                          f"Docker's data root, {ref} needs ~{mb(local.size * DISK_MARGIN)}; "
                          "free space there (docker image prune)")
    transfer(device.fleet.local, local, client, device.say)
    return local.id
