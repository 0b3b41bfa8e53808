"""Getting the client image onto a device: pulled, streamed from this machine, or built there.

Streaming uses the Docker API on both ends: ``GET /images/{name}/get`` from this
machine's daemon, chunk by chunk, into ``POST /images/load`` on the device, so the
image never sits whole in memory or on this machine's disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from fedfleet.shared.errors import FedfleetError

CHUNK = 1 << 20
SAVE_TIMEOUT = 1800.0
"""Seconds this machine's Docker may stay silent during ``docker save``: it exports every
layer before the first byte, which takes minutes for a 2 GB image on a busy disk."""
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
          "armv7l": "arm", "armv6l": "arm", "arm": "arm", "i686": "386", "i386": "386"}
"""``uname -m`` (what ``docker info`` reports) and GOARCH (what images record) to GOARCH."""


class ImageError(FedfleetError):
    """The client image cannot be put on the device."""


def goarch(machine: str) -> str:
    """Return the GOARCH name (amd64, arm64, arm) for a machine or image architecture."""
    return ARCHES.get(machine.lower(), machine.lower())


def is_registry_ref(ref: str) -> bool:
    """Tell whether ``ref`` names a registry host (``a.b/..``, ``host:port/..``, ``localhost/..``).

    ``fedfleet-client:0.1.0`` and ``me/fedfleet-client`` are local names (Docker Hub is
    only used when the inventory says ``source = "registry"``).
    """
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


@dataclass(frozen=True)
class LocalImage:
    """An image in this machine's Docker, as a device will receive it."""

    ref: str
    id: str
    arch: str
    os: str
    size: int


class LocalImages:
    """The operator's Docker daemon, opened on first use (shared by all devices)."""

    def __init__(self, connect: Callable[[float], docker.DockerClient]) -> None:
        """Remember how to reach the local daemon (``connect(timeout)``)."""
        self._connect = connect
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        """Return the local daemon's client (for quick calls)."""
        if self._client is None:
            self._client = self._connect(60.0)
        return self._client

    def get(self, ref: str) -> LocalImage:
        """Describe the local image ``ref``.

        Raises
        ------
        ImageError
            If this machine's Docker has no such image.
        """
        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            raise ImageError(f"no image {ref} on this machine: build it (docker build -f "
                             f"Dockerfile.client -t {ref} .), or use --build-on-device or "
                             "a registry image") from None
        return LocalImage(ref=ref, id=str(attrs["Id"]), arch=goarch(str(attrs["Architecture"])),
                          os=str(attrs.get("Os", "linux")), size=int(attrs.get("Size", 0)))

    def save(self, ref: str) -> Iterator[bytes]:
        """Yield the image as a ``docker save`` tar stream, in 1 MiB chunks.

        Each stream has its own connection with a long read timeout (see ``SAVE_TIMEOUT``).

        Raises
        ------
        ImageError
            If this machine's Docker stops sending.
        """
        client = self._connect(SAVE_TIMEOUT)
        try:
            yield from client.api.get_image(ref, chunk_size=CHUNK)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise ImageError(f"this machine's Docker stopped sending {ref} "
                             f"({type(err).__name__}): check 'docker system df' and "
                             "/var/log/docker here") from None
        finally:
            client.close()

    def close(self) -> None:
        """Close the connection if it was opened."""
        if self._client is not None:
            self._client.close()


def mb(value: float) -> str:
    """Return ``value`` bytes as ``1,234 MB``."""
    return f"{value / 1e6:,.0f} MB"


class Meter:
    """Counts bytes passing through and reports at most every ``every`` seconds."""

    def __init__(self, total: int, say: Callable[[str], None], what: str,
                 every: float = 2.0) -> None:
        """Report ``what`` with MB sent of ``total``."""
        self.total, self.say, self.what, self.every = total, say, what, every
        self.sent = 0
        self.started = time.monotonic()
        self._last = 0.0

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` through, counting them."""
        for chunk in chunks:
            self.sent += len(chunk)
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self.say(f"{self.what}: {self.sent / 1e6:,.0f} of ~{self.total / 1e6:,.0f} MB "
                         f"({self.sent / 1e6 / max(now - self.started, 1e-3):.0f} MB/s)")
            yield chunk


def transfer(local: LocalImages, image: LocalImage, remote: docker.DockerClient,
             say: Callable[[str], None], timeout: float = 1800) -> None:
    """Stream ``image`` from this machine's Docker into the device's.

    Raises
    ------
    ImageError
        If the device refuses the image (full disk, broken stream), or loads another ID.
    """
    meter = Meter(image.size, say, f"sending {image.ref}")
    saved = remote.api.timeout
    remote.api.timeout = timeout  # the device answers once it has stored every layer
    try:
        events = remote.api.load_image(meter.wrap(local.save(image.ref)))
        _follow(events, "loading", image.ref)
    except docker.errors.APIError as err:
        raise ImageError(load_failure(image.ref, str(err.explanation or err))) from None
    except requests.exceptions.RequestException as err:
        raise ImageError(f"the device stopped receiving {image.ref} after "
                         f"{mb(meter.sent)} ({type(err).__name__}); a full disk is the usual "
                         "cause: check 'docker system df' there") from None
    finally:
        remote.api.timeout = saved
    loaded = remote.api.inspect_image(image.ref)["Id"]
    if loaded != image.id:
        raise ImageError(f"the device loaded {image.ref} as {loaded[:19]}, expected "
                         f"{image.id[:19]}")
    say(f"sent {image.ref} ({meter.sent / 1e6:,.0f} MB in "
        f"{time.monotonic() - meter.started:.0f}s)")


def load_failure(ref: str, text: str) -> str:
    """Explain a failed image load in one line."""
    if "no space left on device" in text:
        return (f"the device ran out of disk space while storing {ref}: free space in "
                "Docker's data root there (docker image prune, docker system df)")
    return f"the device could not load {ref}: {text.strip().splitlines()[-1][:300]}"


def _follow(events: Any, verb: str, ref: str) -> None:
    """Consume a Docker progress stream; raise on its error events."""
    for event in events:
        if isinstance(event, dict) and (event.get("error") or event.get("errorDetail")):
            text = str(event.get("error") or event["errorDetail"].get("message", ""))
            raise ImageError(load_failure(ref, text) if verb == "loading" else
                             f"{verb} {ref} on the device failed: {text.strip()[:300]}")


def pull(remote: docker.DockerClient, ref: str, say: Callable[[str], None],
         timeout: float = 1800) -> str:
    """Have the device pull ``ref`` from its registry; return the image ID.

    Raises
    ------
    ImageError
        If the pull fails (no such image, no access, no network).
    """
    repo, tag = split_ref(ref)
    say(f"pulling {ref}")
    saved = remote.api.timeout
    remote.api.timeout = timeout
    try:
        _follow(remote.api.pull(repo, tag=tag, stream=True, decode=True), "pulling", ref)
    except docker.errors.APIError as err:
        raise ImageError(f"the device could not pull {ref}: "
                         f"{str(err.explanation or err).strip()[:300]}") from None
    finally:
        remote.api.timeout = saved
    return str(remote.api.inspect_image(ref)["Id"])


def build(remote: docker.DockerClient, context: Path, ref: str, network: str,
          say: Callable[[str], None], timeout: float = 3600) -> str:
    """Build ``Dockerfile.client`` from ``context`` on the device and tag it ``ref``.

    The context is sent as Docker would (``.dockerignore`` applies); the device builds
    for its own architecture. Returns the image ID.

    Raises
    ------
    ImageError
        If the build fails; the message ends with the build's last output line.
    """
    say(f"building {ref} on the device from {context}")
    saved = remote.api.timeout
    remote.api.timeout = timeout
    try:
        for event in remote.api.build(path=str(context), dockerfile="Dockerfile.client",
                                      tag=ref, rm=True, forcerm=True, decode=True,
                                      network_mode=network):
            if event.get("error"):
                raise ImageError(f"building {ref} on the device failed: "
                                 f"{str(event['error']).strip()[:300]}")
            line = str(event.get("stream", "")).strip()
            if line.startswith("Step "):
                say(f"building {ref}: {line[:80]}")
    except docker.errors.APIError as err:
        raise ImageError(f"building {ref} on the device failed: "
                         f"{str(err.explanation or err).strip()[:300]}") from None
    finally:
        remote.api.timeout = saved
    return str(remote.api.inspect_image(ref)["Id"])


def split_ref(ref: str) -> tuple[str, str]:
    """Return ``(repository, tag)`` of an image reference (a registry port is no tag)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag
