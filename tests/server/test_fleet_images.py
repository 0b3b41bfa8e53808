"""Getting the image onto a device (pull, stream, build) and the failures each one reports."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from fake_docker import FakeDevice, FakeImage, FakeLocal, FakeServer

from fedfleet.server.fleet.checks import Facts
from fedfleet.server.fleet.common import Device, DeviceError, Fleet
from fedfleet.server.fleet.images import (
    ImageError,
    LocalImage,
    LocalImages,
    Meter,
    build,
    goarch,
    is_registry_ref,
    load_failure,
    pull,
    split_ref,
    transfer,
)
from fedfleet.server.fleet.specs import DeviceSpec, Endpoint, ServerSpec
from fedfleet.server.fleet.transfer import ensure_image, image_source


def _image(ref: str, **kwargs: Any) -> FakeImage:
    return FakeImage(ref=ref, id=f"sha256:{hashlib.sha256(ref.encode()).hexdigest()}",
                     **kwargs)


V1 = _image("fedfleet-client:0.1.0")
HUB = _image("registry.example.org/fedfleet-client:0.1.0")
ARM = _image("registry.example.org/fedfleet-client:arm", arch="arm64")
AMD64 = Facts(os="linux", arch="amd64", machine="x86_64", memory=4 << 30, cpus=4,
              docker="27.5.1")


class Rig:
    """One fake device, this machine's images, and a Device to run the steps with."""

    def __init__(self, tmp_path: Path) -> None:
        self.catalog = {image.ref: image for image in (V1, HUB, ARM)}
        self.device = FakeDevice("edge-1", FakeServer(), self.catalog)
        self.local = FakeLocal(self.catalog)
        self.said: list[str] = []
        self.fleet = Fleet(server=ServerSpec(address="10.0.0.1:8000", ca=tmp_path / "ca.crt"),
                           ca_pem=b"CA", registry=FakeServer(),  # type: ignore[arg-type]
                           local=LocalImages(lambda timeout: self.local))  # type: ignore

    def at(self, image: str, **spec: Any) -> Device:
        """Return the device with an inventory entry for ``image``."""
        entry = DeviceSpec(name="edge-1", endpoint=Endpoint("unix:///run/edge-1.sock"),
                           data="/srv/data", image=image, **spec)
        return Device(self.device, entry, self.fleet, self.said.append)  # type: ignore


@pytest.fixture()
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


@pytest.mark.parametrize(("ref", "registry", "parts"), [
    ("fedfleet-client:0.1.0", False, ("fedfleet-client", "0.1.0")),
    ("me/fedfleet-client", False, ("me/fedfleet-client", "latest")),
    ("localhost/fedfleet-client", True, ("localhost/fedfleet-client", "latest")),
    ("localhost:5000/fc", True, ("localhost:5000/fc", "latest")),  # a port is no tag
    ("reg.example.org:5000/a/b:1.2", True, ("reg.example.org:5000/a/b", "1.2")),
])
def test_image_references(ref: str, registry: bool, parts: tuple[str, str]) -> None:
    """Registry hosts are told from local names; the tag is split off, a port is not."""
    # Execute / Assert
    assert is_registry_ref(ref) is registry
    assert split_ref(ref) == parts


def test_architectures_are_named_as_images_name_them() -> None:
    """The names of uname -m and GOARCH both map to GOARCH; unknown names pass through."""
    # Execute / Assert
    assert [goarch(m) for m in ("x86_64", "AARCH64", "armv7l", "i686", "riscv64")] == \
        ["amd64", "arm64", "arm", "386", "riscv64"]


def test_a_missing_local_image_says_how_to_build_it(rig: Rig) -> None:
    """The operator's Docker has no such image: the message gives the build command."""
    # Execute
    with pytest.raises(ImageError) as caught:
        rig.fleet.local.get("fedfleet-client:9.9")
    # Assert
    assert str(caught.value) == (
        "no image fedfleet-client:9.9 on this machine: build it (docker build -f "
        "Dockerfile.client -t fedfleet-client:9.9 .), or use --build-on-device or a "
        "registry image")


def test_a_local_docker_that_stops_sending_is_one_line() -> None:
    """A broken-off docker save: ImageError naming the image; its client is closed."""
    # Prepare
    closed: list[bool] = []

    class Stalls:
        api: Any = None

        def __init__(self) -> None:
            self.api = self

        def get_image(self, ref: str, chunk_size: int) -> Iterator[bytes]:
            yield b"layer"
            raise requests.exceptions.ReadTimeout("read timed out")

        def close(self) -> None:
            closed.append(True)

    local = LocalImages(lambda timeout: Stalls())  # type: ignore[arg-type,return-value]
    chunks: list[bytes] = []
    # Execute
    with pytest.raises(ImageError) as caught:
        chunks.extend(local.save("fedfleet-client:0.1.0"))
    # Assert
    assert chunks == [b"layer"]
    assert str(caught.value) == ("this machine's Docker stopped sending fedfleet-client:0.1.0 "
                                 "(ReadTimeout): check 'docker system df' and /var/log/docker "
                                 "here")
    assert closed == [True]


def _streamed(rig: Rig, image: FakeImage) -> LocalImage:
    return rig.fleet.local.get(image.ref)


def test_a_device_without_space_refuses_the_stream(rig: Rig,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker's 'no space left on device' becomes advice; the API timeout is restored."""
    # Prepare
    def load_image(chunks: Iterator[bytes]) -> Any:
        raise docker.errors.APIError("500 Server Error",
                                     explanation="write /var/lib/docker/tmp: no space left "
                                                 "on device")

    monkeypatch.setattr(rig.device.api, "load_image", load_image)
    # Execute
    with pytest.raises(ImageError) as caught:
        transfer(rig.fleet.local, _streamed(rig, V1), rig.device, rig.said.append)  # type: ignore
    # Assert
    assert str(caught.value) == ("the device ran out of disk space while storing "
                                 "fedfleet-client:0.1.0: free space in Docker's data root "
                                 "there (docker image prune, docker system df)")
    assert rig.device.api.timeout == 60


def test_a_device_that_stops_receiving_is_one_line(rig: Rig,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops mid-stream: the bytes sent so far and the usual cause."""
    # Prepare
    def load_image(chunks: Iterator[bytes]) -> Any:
        b"".join(chunks)
        raise requests.exceptions.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(rig.device.api, "load_image", load_image)
    # Execute
    with pytest.raises(ImageError) as caught:
        transfer(rig.fleet.local, _streamed(rig, V1), rig.device, rig.said.append)  # type: ignore
    # Assert
    assert str(caught.value) == ("the device stopped receiving fedfleet-client:0.1.0 after "
                                 "0 MB (ConnectionError); a full disk is the usual cause: "
                                 "check 'docker system df' there")


def test_an_error_event_in_the_load_stream_fails_the_transfer(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device answers 200 but its progress stream carries an error: last line kept."""
    # Prepare
    def load_image(chunks: Iterator[bytes]) -> Any:
        return iter([{"stream": "Loading layer"},
                     {"errorDetail": {"message": "unexpected EOF\narchive/tar: invalid"}}])

    monkeypatch.setattr(rig.device.api, "load_image", load_image)
    # Execute / Assert
    with pytest.raises(ImageError, match="^the device could not load fedfleet-client:0.1.0: "
                                         "archive/tar: invalid$"):
        transfer(rig.fleet.local, _streamed(rig, V1), rig.device, rig.said.append)  # type: ignore


def test_a_device_that_loads_another_image_is_refused(rig: Rig,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The loaded ID must be the local one (a tag pointing elsewhere is caught)."""
    # Prepare
    rig.catalog[V1.ref] = dataclasses.replace(V1, id="sha256:" + "e" * 64)
    local = LocalImage(ref=V1.ref, id=V1.id, arch="amd64", os="linux", size=5)
    # Execute / Assert
    with pytest.raises(ImageError, match=f"^the device loaded {V1.ref} as sha256:eeeeeeeeeeee, "
                                         f"expected {V1.id[:19]}$"):
        transfer(rig.fleet.local, local, rig.device, rig.said.append)  # type: ignore


def test_the_meter_reports_progress_at_most_every_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks pass through unchanged; a line only when 'every' seconds have gone by."""
    # Prepare
    ticks = iter([100.0, 100.5, 101.0, 103.0])
    monkeypatch.setattr("fedfleet.server.fleet.images.time.monotonic", lambda: next(ticks))
    said: list[str] = []
    meter = Meter(4_000_000, said.append, "sending x", every=2.0)
    # Execute
    out = list(meter.wrap(iter([b"a" * 1_000_000] * 3)))
    # Assert
    assert len(out) == 3 and meter.sent == 3_000_000
    assert said == ["sending x: 1 of ~4 MB (2 MB/s)", "sending x: 3 of ~4 MB (1 MB/s)"]


def test_pull_returns_the_pulled_id(rig: Rig) -> None:
    """The device pulls from its registry; the ID is what the device then has."""
    # Execute
    image_id = pull(rig.device, HUB.ref, rig.said.append)  # type: ignore[arg-type]
    # Assert
    assert image_id == HUB.id
    assert rig.said == [f"pulling {HUB.ref}"]


def test_a_failed_pull_is_one_line(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error event (no such tag) and an API error (no access) both name the image."""
    # Execute
    with pytest.raises(ImageError) as missing:
        pull(rig.device, "registry.example.org/nope:1", rig.said.append)  # type: ignore

    def denied(repo: str, tag: str, **kwargs: Any) -> Any:
        raise docker.errors.APIError("403", explanation="denied: requested access to the "
                                                         "resource is denied\n")

    monkeypatch.setattr(rig.device.api, "pull", denied)
    with pytest.raises(ImageError) as refused:
        pull(rig.device, HUB.ref, rig.said.append)  # type: ignore[arg-type]
    # Assert
    assert str(missing.value) == ("pulling registry.example.org/nope:1 on the device failed: "
                                  "manifest for registry.example.org/nope:1 not found")
    assert str(refused.value) == (f"the device could not pull {HUB.ref}: denied: requested "
                                  "access to the resource is denied")
    assert rig.device.api.timeout == 60


class Builder:
    """Stands in for ``APIClient.build``: the decoded events of a build, or its error."""

    def __init__(self, device: FakeDevice, events: list[dict[str, Any]],
                 error: Exception | None = None) -> None:
        self.device, self.events, self.error = device, events, error
        self.asked: dict[str, Any] = {}

    def __call__(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.asked = kwargs
        if self.error is not None:
            raise self.error
        yield from self.events
        if not any("error" in event for event in self.events):
            self.device.put_image(_image(kwargs["tag"]))


def test_build_on_the_device_reports_steps_and_returns_the_id(
        rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dockerfile.client is built from the context with the device's network."""
    # Prepare
    builder = Builder(rig.device, [{"stream": "Step 1/9 : FROM python:3.12-slim\n"},
                                   {"stream": " ---> 1234\n"}, {"stream": "Step 2/9 : RUN x"}])
    monkeypatch.setattr(rig.device.api, "build", builder, raising=False)
    # Execute
    image_id = build(rig.device, tmp_path, "fc:local", "host", rig.said.append)  # type: ignore
    # Assert
    assert image_id == _image("fc:local").id
    assert builder.asked == {"path": str(tmp_path), "dockerfile": "Dockerfile.client",
                             "tag": "fc:local", "rm": True, "forcerm": True, "decode": True,
                             "network_mode": "host"}
    assert rig.said == [f"building fc:local on the device from {tmp_path}",
                        "building fc:local: Step 1/9 : FROM python:3.12-slim",
                        "building fc:local: Step 2/9 : RUN x"]


@pytest.mark.parametrize(("events", "error", "message"), [
    ([{"stream": "Step 1/9"}, {"error": "The command '/bin/sh -c pip install' returned a "
                                        "non-zero code: 1\n"}], None,
     "building fc:local on the device failed: The command '/bin/sh -c pip install' "
     "returned a non-zero code: 1"),
    ([], docker.errors.APIError("500", explanation="Cannot locate Dockerfile.client"),
     "building fc:local on the device failed: Cannot locate Dockerfile.client"),
])
def test_a_failed_build_is_one_line(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    events: list[dict[str, Any]], error: Exception | None,
                                    message: str) -> None:
    """A failing step or a refused build: the build's own last words; timeout restored."""
    # Prepare
    monkeypatch.setattr(rig.device.api, "build", Builder(rig.device, events, error),
                        raising=False)
    # Execute
    with pytest.raises(ImageError) as caught:
        build(rig.device, tmp_path, "fc:local", "bridge", rig.said.append)  # type: ignore
    # Assert
    assert str(caught.value) == message
    assert rig.device.api.timeout == 60


def test_load_failure_keeps_the_last_line() -> None:
    """Docker's multi-line error is cut to its last line."""
    # Execute / Assert
    assert load_failure("x:1", "first\nsecond \n") == "the device could not load x:1: second"


def test_the_image_source_follows_the_inventory_and_the_flag(rig: Rig) -> None:
    """auto: registry for a registry host, else local; --build-on-device wins over all."""
    # Execute / Assert
    assert image_source(rig.at(V1.ref)) == "local"
    assert image_source(rig.at(HUB.ref)) == "registry"
    assert image_source(rig.at(V1.ref, source="registry")) == "registry"
    assert image_source(rig.at(HUB.ref, source="build")) == "build"
    rig.fleet = dataclasses.replace(rig.fleet, build_on_device=True)
    assert image_source(rig.at(HUB.ref, source="local")) == "build"


def test_build_on_device_needs_a_build_context(rig: Rig) -> None:
    """--build-on-device without build_context: nothing is asked of the device."""
    # Prepare
    rig.fleet = dataclasses.replace(rig.fleet, build_on_device=True)
    # Execute
    with pytest.raises(DeviceError) as caught:
        ensure_image(rig.at(V1.ref), AMD64)
    # Assert
    assert str(caught.value) == ("--build-on-device needs build_context in the inventory "
                                 "(the fedfleet repository's folder)")
    assert rig.said == []


def test_ensure_image_builds_from_the_context(rig: Rig, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With source = "build" the device builds the image; its ID is returned."""
    # Prepare
    monkeypatch.setattr(rig.device.api, "build", Builder(rig.device, []), raising=False)
    # Execute
    image_id = ensure_image(rig.at("fc:local", source="build", build_context=tmp_path), AMD64)
    # Assert
    assert image_id == _image("fc:local").id


def test_a_registry_image_is_pulled_and_its_architecture_checked(rig: Rig) -> None:
    """The pulled image must run on the device: arm64 on amd64 is refused."""
    # Execute
    image_id = ensure_image(rig.at(HUB.ref), AMD64)
    with pytest.raises(DeviceError) as caught:
        ensure_image(rig.at(ARM.ref), AMD64)
    # Assert
    assert image_id == HUB.id
    assert str(caught.value) == (f"{ARM.ref} on the device is linux/arm64, the device "
                                 "linux/amd64")


def test_a_failed_pull_becomes_the_device_error(rig: Rig) -> None:
    """The ImageError reaches the deploy as a DeviceError with the same line."""
    # Execute / Assert
    with pytest.raises(DeviceError, match="^pulling registry.example.org/nope:1 on the device "
                                          "failed: manifest for registry.example.org/nope:1 "
                                          "not found$"):
        ensure_image(rig.at("registry.example.org/nope:1"), AMD64)


def test_an_image_already_there_under_another_name_is_only_tagged(rig: Rig) -> None:
    """Same ID on the device: no bytes sent, the inventory's name tagged onto it."""
    # Prepare
    rig.device.put_image(dataclasses.replace(V1, ref="old-name:1"))
    # Execute
    image_id = ensure_image(rig.at(V1.ref), AMD64)
    # Assert
    assert image_id == V1.id
    assert rig.device.loaded == []
    assert rig.device.images[V1.ref].id == V1.id
    assert rig.said == [f"image {V1.ref} ({V1.id[7:19]}) already there"]
