"""A small in-memory stand-in for the docker SDK objects the fleet engine uses.

It keeps images, containers and volumes of one "device" in dicts and plays what the
client image does: the setup container makes a node key in the key volume, a client
container of a healthy image turns healthy and brings its node online on the fake
server, one of a broken image exits with an error line in its log.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import docker.errors

from fedfleet.server.fleet.container import NODE_LABEL


@dataclass(frozen=True)
class FakeImage:
    """A client image: its ID, architecture, fedfleet version and whether it works."""

    ref: str
    id: str
    arch: str = "amd64"
    version: str = "0.1.0"
    healthy: bool = True
    size: int = 1000


class FakeServer:
    """The server's node registry: register, list, revoke; nodes come online on start."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.ids = itertools.count(101)
        self.clock = itertools.count(1)
        self.registered: list[str] = []

    def register(self, public_key: str, name: str) -> int:
        """Register ``public_key``; return the new node ID."""
        node_id = next(self.ids)
        self.rows[node_id] = {"node-id": str(node_id), "status": "registered"}
        self.registered.append(public_key)
        return node_id

    def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
        """Return a copy of the node list."""
        return {k: dict(v) for k, v in self.rows.items()}

    def revoke(self, node_id: int) -> None:
        """Unregister ``node_id``."""
        self.rows[node_id]["status"] = "unregistered"

    def online(self, node_id: int) -> None:
        """Mark the node online: its SuperNode connected (again)."""
        if self.rows.get(node_id, {}).get("status") != "unregistered":
            self.rows[node_id].update({"status": "online", "online-at": f"t{next(self.clock)}"})


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Result:
    def __init__(self, code: int, output: Any) -> None:
        self.exit_code, self.output = code, output


class _ImageRef:
    def __init__(self, image_id: str) -> None:
        self.id = image_id


class FakeContainer:
    """A container on the fake device."""

    def __init__(self, daemon: FakeDevice, cid: str, name: str, image: FakeImage,
                 labels: dict[str, str], mounts: list[dict[str, Any]], setup: bool) -> None:
        self.daemon, self.id, self.name, self.labels = daemon, cid, name, labels
        self.image = _ImageRef(image.id)
        self.fake_image = image
        self.mounts = {m["Target"]: m for m in mounts}
        self.setup = setup
        self.output = b""
        self.attrs: dict[str, Any] = {"State": {"Status": "created"}, "Image": image.id,
                                      "RestartCount": 0}

    @property
    def status(self) -> str:
        """Return the state Docker reports (created, running, exited)."""
        return str(self.attrs["State"]["Status"])

    def _volume(self, target: str) -> dict[str, bytes]:
        return self.daemon.volume_files[self.mounts[target]["Source"]]

    def start(self) -> None:
        """Run the setup script, or start the client as its image does."""
        if self.setup:
            files = self._volume("/keys")
            lines = ["key=kept"]
            if "node-key" not in files:
                files["node-key"] = b"PRIVATE"
                files["node-key.pub"] = f"ecdsa-sha2-nistp384 KEY-{self.daemon.name}".encode()
                lines = ["key=created"]
            if "/probe" in self.mounts:
                lines.append("data=dir")
            lines.append(f"fedfleet, version {self.fake_image.version}")
            self.output = ("\n".join(lines) + "\n").encode()
            self.attrs["State"] = {"Status": "exited", "ExitCode": 0}
        elif self.fake_image.healthy:
            self.attrs["State"] = {"Status": "running", "Running": True,
                                   "StartedAt": "2026-12-04T15:00:00.123456789Z",
                                   "Health": {"Status": "healthy"}}
            node = self.labels.get(NODE_LABEL, "")
            if node.isdigit():
                self.daemon.server.online(int(node))
        else:
            self.attrs["State"] = {"Status": "exited", "ExitCode": 1}
            self.output = b"starting\nError: broken on purpose\n"
        self.daemon.started.append(self.name)

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        """Return the setup container's exit status."""
        return {"StatusCode": 0}

    def logs(self, stream: bool = False, follow: bool = False, tail: int | str = "all",
             **kwargs: Any) -> bytes | Iterator[bytes]:
        """Return what the container printed (the last ``tail`` lines), or stream it."""
        lines = self.output.splitlines(keepends=True)
        if isinstance(tail, int):
            lines = lines[len(lines) - tail:] if tail else []
        return iter(lines) if stream else b"".join(lines)

    def put_archive(self, path: str, data: bytes) -> bool:
        """Store the tar's files in the volume mounted at ``path``."""
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                handle = tar.extractfile(member)
                assert handle is not None
                self._volume(path)[member.name] = handle.read()
        return True

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        """Return one file of a mounted volume as a tar stream."""
        folder, _, name = path.rpartition("/")
        files = self._volume(folder)
        if name not in files:
            raise docker.errors.NotFound(f"Could not find the file {path} in container")
        self.daemon.read_files.append(path)
        return iter([_tar({name: files[name]})]), {}

    def exec_run(self, cmd: list[str], demux: bool = False, **kwargs: Any) -> _Result:
        """Answer ``cat activity.json`` with the device's activity, others from ``replies``.

        As Docker does, a stopped container refuses (409), and ``demux=True`` gives
        the output as ``(stdout, stderr)`` with None for an empty stream.
        """
        if self.status != "running":
            raise docker.errors.APIError(f"409 Client Error: Conflict (\"container {self.id} "
                                         "is not running\")")
        self.daemon.executed.append(list(cmd))
        if cmd[0] == "cat":
            code, out, err = 0, json.dumps(self.daemon.activity).encode(), b""
        else:
            code, out, err = self.daemon.replies.get(
                tuple(cmd), (127, b"", f"exec: {cmd[0]}: not found\n".encode()))
        if demux:
            return _Result(code, (out or None, err or None))
        return _Result(code, out + err)

    def rename(self, name: str) -> None:
        """Give the container another name."""
        self.name = name

    def stop(self, timeout: int | None = None) -> None:
        """Stop the container."""
        self.attrs["State"] = {"Status": "exited", "ExitCode": 0}

    def reload(self) -> None:
        """Nothing to fetch: the attributes are always current."""

    def remove(self, force: bool = False) -> None:
        """Remove the container."""
        del self.daemon.store[self.id]


class _Volume:
    def __init__(self, daemon: FakeDevice, name: str) -> None:
        self.daemon, self.name = daemon, name

    def remove(self, force: bool = False) -> None:
        del self.daemon.volume_files[self.name]


class _Volumes:
    def __init__(self, daemon: FakeDevice) -> None:
        self.daemon = daemon

    def get(self, name: str) -> _Volume:
        if name not in self.daemon.volume_files:
            raise docker.errors.NotFound(f"no such volume: {name}")
        return _Volume(self.daemon, name)

    def create(self, name: str, labels: dict[str, str] | None = None) -> _Volume:
        self.daemon.volume_files.setdefault(name, {})
        return _Volume(self.daemon, name)


class _Containers:
    def __init__(self, daemon: FakeDevice) -> None:
        self.daemon = daemon

    def get(self, key: str) -> FakeContainer:
        for container in self.daemon.store.values():
            if key in (container.id, container.name):
                return container
        raise docker.errors.NotFound(f"No such container: {key}")

    def list(self, all: bool = False) -> list[FakeContainer]:
        return list(self.daemon.store.values())

    def create(self, image: str, command: Any = None, name: str | None = None,
               labels: dict[str, str] | None = None, mounts: Iterable[Any] = (),
               **kwargs: Any) -> FakeContainer:
        setup = kwargs.get("entrypoint") in (["sh", "-c"], ["true"])
        return self.daemon.add(image, name, labels or {}, list(mounts), setup)

    def run(self, image: str, command: list[str], **kwargs: Any) -> bytes:
        """Only ``df -Pk /``: the device's free disk."""
        free = self.daemon.free_kb
        return f"Filesystem 1024-blocks Used Available Use% Mounted\nroot 9 9 {free} 9% /\n" \
            .encode()


class _Api:
    def __init__(self, daemon: FakeDevice) -> None:
        self.daemon = daemon
        self.timeout = 60

    def inspect_image(self, ref: str) -> dict[str, Any]:
        image = self.daemon.images.get(ref)
        if image is None:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return {"Id": image.id, "Architecture": image.arch, "RepoDigests": []}

    def tag(self, image_id: str, repo: str, tag: str) -> bool:
        self.daemon.images[f"{repo}:{tag}"] = self.daemon.images[image_id]
        return True

    def pull(self, repo: str, tag: str = "latest", **kwargs: Any) -> Iterator[dict[str, Any]]:
        image = self.daemon.catalog.get(f"{repo}:{tag}")
        if image is None:
            return iter([{"error": f"manifest for {repo}:{tag} not found"}])
        self.daemon.put_image(image)
        return iter([{"status": "Downloaded newer image"}])

    def load_image(self, chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        ref = b"".join(chunks).decode().removeprefix("IMAGE:")
        self.daemon.put_image(self.daemon.catalog[ref])
        self.daemon.loaded.append(ref)
        return iter([{"stream": f"Loaded image: {ref}"}])

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def create_container(self, image: str, name: str, labels: dict[str, str],
                         host_config: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        if any(c.name == name for c in self.daemon.store.values()):
            raise docker.errors.APIError(f"Conflict: the name {name} is already in use")
        mounts = list(host_config.get("mounts", []))
        for mount in mounts:
            if mount["Type"] == "volume":
                self.daemon.volume_files.setdefault(mount["Source"], {})
        return {"Id": self.daemon.add(image, name, labels, mounts, False).id}


class FakeDevice:
    """One device's Docker daemon (a ``docker.DockerClient`` as far as the engine goes)."""

    def __init__(self, name: str, server: FakeServer, catalog: dict[str, FakeImage],
                 arch: str = "x86_64", free_kb: int = 10 << 20) -> None:
        self.name, self.server, self.catalog = name, server, catalog
        self.arch, self.free_kb = arch, free_kb
        self.images: dict[str, FakeImage] = {}
        self.store: dict[str, FakeContainer] = {}
        self.volume_files: dict[str, dict[str, bytes]] = {}
        self.activity: dict[str, Any] = {"state": "idle"}
        self.started: list[str] = []
        self.loaded: list[str] = []
        self.read_files: list[str] = []
        self.executed: list[list[str]] = []
        self.replies: dict[tuple[str, ...], tuple[int, bytes, bytes]] = {}
        self.ids = itertools.count(1)
        self.api = _Api(self)
        self.containers = _Containers(self)
        self.volumes = _Volumes(self)

    def info(self) -> dict[str, Any]:
        """Return what ``docker info`` says about the device."""
        return {"OSType": "linux", "Architecture": self.arch, "MemTotal": 4 << 30,
                "NCPU": 4, "ServerVersion": "27.5.1"}

    def put_image(self, image: FakeImage) -> None:
        """Store ``image`` under its reference and its ID."""
        self.images[image.ref] = self.images[image.id] = image

    def add(self, image: str, name: str | None, labels: dict[str, str],
            mounts: list[dict[str, Any]], setup: bool) -> FakeContainer:
        """Create a container of ``image`` (a reference or an ID)."""
        if image not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        cid = f"c{next(self.ids)}"
        container = FakeContainer(self, cid, name or cid, self.images[image], labels, mounts,
                                  setup)
        self.store[cid] = container
        return container

    def close(self) -> None:
        """Nothing to close."""


class FakeLocal:
    """Stand in for this machine's Docker: the images a deploy streams to devices."""

    def __init__(self, catalog: dict[str, FakeImage]) -> None:
        self.catalog = catalog
        self.api = self

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """Describe ``ref``; an unknown one is Docker's 404 (ImageNotFound)."""
        image = self.catalog.get(ref)
        if image is None:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return {"Id": image.id, "Architecture": image.arch, "Os": "linux", "Size": image.size}

    def get_image(self, ref: str, chunk_size: int) -> Iterator[bytes]:
        yield f"IMAGE:{ref}".encode()

    def close(self) -> None:
        """Nothing to close."""
