"""Build the images and run the default, secure `docker compose up` for real.

Needs a Docker engine with the Compose plugin and the base image (``dev/setup.sh``
provides all three). When Docker is missing the tests are skipped, unless
FEDFLEET_REQUIRE_DOCKER=1 (set by CI), where they fail instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dockerkit import compose
from ports import free_port

pytestmark = pytest.mark.docker

UP_TIMEOUT = 1500  # the default 10 rounds take ~6-8 min on 2 cores


@pytest.fixture
def stack(images: None, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """Yield a compose project of its own with outputs in tmp_path; tear it down."""
    project = f"fedfleet-e2e-{uuid.uuid4().hex[:8]}"
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    env = {"FEDFLEET_OUTPUT_DIR": str(outputs), "FEDFLEET_PORT": str(free_port()),
           "FEDFLEET_SECRETS_DIR": str(tmp_path / "secrets")}
    try:
        yield project, env, outputs
    finally:
        compose(project, env, "down", "--volumes", "--remove-orphans", "--timeout", "10",
                 timeout=300)


def test_default_compose_run_trains_a_useful_model(
        stack: tuple[str, dict[str, str], Path]) -> None:
    """`docker compose up` trains over TLS with node auth; the edge reaches only the Fleet.

    Every round and the final model land; from a device container the control plane
    is refused and bad joins get their one-line reasons.
    """
    project, env, outputs = stack
    up = compose(project, env, "up", "--detach", "--no-build", timeout=600)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + UP_TIMEOUT
    record = None
    while time.monotonic() < deadline:
        found = list(outputs.glob("run-*/metrics.json"))
        if found:
            record = json.loads(found[0].read_text())
            if record["status"] != "running":
                break
        time.sleep(5)
    # The record is final a moment before the server prints its last line.
    logs_deadline = time.monotonic() + 60
    while True:
        logs = compose(project, env, "logs", "--no-color", "server", timeout=120).stdout
        if "done: run" in logs or time.monotonic() > logs_deadline:
            break
        time.sleep(2)
    assert record is not None and record["status"] == "completed", logs[-5000:]

    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, 11))
    assert all(r["train_replies"] == 3 for r in rounds)
    final = rounds[-1]["central_accuracy"]
    assert final >= 0.85, [r["central_accuracy"] for r in rounds]
    assert "done: run" in logs and "round 10/10" in logs

    run_dir = next(outputs.glob("run-*"))
    assert len(list((run_dir / "checkpoints").glob("round-*.keras"))) == 10
    import keras

    from fedfleet.shared.data import load_dataset

    test = load_dataset("builtin:digits", split="test")
    model = keras.models.load_model(run_dir / "final_model.keras")
    predictions = model.predict(test.x, verbose=0).argmax(axis=1)
    assert float(np.mean(predictions == test.y)) == pytest.approx(final, abs=1e-6)

    status = compose(project, env, "ps", "--format", "json", timeout=60).stdout
    states = [json.loads(line) for line in status.splitlines() if line.strip()]
    health = {s["Service"]: s.get("Health", "") for s in states}
    assert health.get("server") == "healthy" and health.get("gateway") == "healthy", health
    _check_edge_network_is_fleet_only(project, env)
    _check_refusals_from_a_device(project, env)


FLWR_CONFIG = ("mkdir -p /tmp/admin && printf '[superlink]\\ndefault = \"x\"\\n"
               "[superlink.x]\\naddress = \"gateway:8000\"\\nroot-certificates = "
               "\"/run/secrets/fedfleet/ca.crt\"\\n' > /tmp/admin/config.toml && ")


def _in_client(project: str, env: dict[str, str], script: str
               ) -> subprocess.CompletedProcess[str]:
    return compose(project, env, "exec", "-T", "-e", "FLWR_HOME=/tmp/admin", "client-1",
                    "sh", "-c", FLWR_CONFIG + script, timeout=180)


def _check_edge_network_is_fleet_only(project: str, env: dict[str, str]) -> None:
    """From a device, Flower's own CLI can't list or submit runs or register nodes."""
    for script in ("flwr ls --format json",
                   "flwr supernode register /run/secrets/fedfleet/node.key.pub "
                   "--format json"):
        done = _in_client(project, env, script)
        assert '"success": false' in done.stdout and "403 Forbidden" in done.stdout, \
            done.stdout
    post = ("python -c \"import ssl, urllib.request as r, urllib.error as e\n"
            "ctx = ssl.create_default_context(cafile='/run/secrets/fedfleet/ca.crt')\n"
            "for path in ('/v1/control/start-run', '/v1/control/stop-run', "
            "'/v1/runtime/acquire-task', '/v1/fleet/../control/start-run'):\n"
            " try:\n  r.urlopen(r.Request('https://gateway:8000' + path, b'{}'), "
            "context=ctx, timeout=10); print(path, 200)\n"
            " except e.HTTPError as err:\n  print(path, err.code)\"")
    codes = _in_client(project, env, post).stdout.split()
    # A dot segment is malformed (400) before it is a forbidden route (403).
    assert codes[1::2] == ["403", "403", "403", "400"], codes
    probe = ("python -c \"import socket\ntry:\n socket.create_connection(('server', 8000), "
             "3)\n print('reached')\nexcept OSError as e:\n print('unreachable', e)\"")
    assert "unreachable" in _in_client(project, env, probe).stdout
    # ... while on the server host (inside the server container) admin works.
    runs = compose(project, env, "exec", "-T", "server", "fedfleet", "runs",
                    "--format", "json", timeout=120)
    assert runs.returncode == 0 and "finished:completed" in runs.stdout, runs.stderr


def _check_refusals_from_a_device(project: str, env: dict[str, str]) -> None:
    """Plaintext and key-less joins get one-line reasons; the gateway logs the key."""
    join = ("fedfleet join --server gateway:8000 --connect-timeout 20 --home /tmp/j "
            "--runtime-port 9300 ")
    plain = _in_client(project, env, join + "--insecure")
    assert plain.returncode != 0
    assert "requires TLS (plain HTTP was sent to its HTTPS port)" in plain.stderr, \
        plain.stderr
    keyless = _in_client(project, env, join + "--root-certificates "
                         "/run/secrets/fedfleet/ca.crt --no-node-key")
    assert keyless.returncode != 0
    assert "the server admits registered devices only" in keyless.stderr, keyless.stderr
    gateway = compose(project, env, "logs", "--no-color", "gateway", timeout=60).stdout
    refused = [line for line in gateway.splitlines()
               if re.search(r'"POST /v1/fleet/[a-z]+-node HTTP/1.1" 4\d\d ', line)]
    assert refused and 'node-key="LS0t' in refused[-1], gateway[-3000:]


def test_images_hold_no_private_key(images: None, tmp_path: Path) -> None:
    """No layer of any image holds a key file or a PEM/OpenSSH private key of ours.

    Third-party packages ship well-known test vectors (pycryptodome's self-tests) and
    CA bundles, so vendor directories are skipped, except fedfleet's own packages.
    """
    archive = tmp_path / "images.tar"
    subprocess.run(["docker", "save", "-o", str(archive), "fedfleet-server:0.1.0",
                    "fedfleet-client:0.1.0", "fedfleet-gateway:0.1.0"], check=True,
                   timeout=600)
    key_block = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{64,}")
    vendor = ("site-packages/", "dist-packages/", "usr/lib/", "usr/share/", "usr/include/")
    key_names = re.compile(r"(^|/)(node-key[^/]*|[^/]*\.key)$")
    found = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            handle = outer.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            try:
                layer = tarfile.open(fileobj=handle)
            except tarfile.ReadError:
                continue  # a config or manifest blob, not a layer
            for item in layer:
                ours = "fedfleet" in item.name or not any(v in item.name for v in vendor)
                if not item.isfile() or not ours:
                    continue
                if key_names.search(item.name):
                    found.append(item.name)
                elif item.size < 10**7:
                    data = layer.extractfile(item)
                    if data is not None and key_block.search(data.read()):
                        found.append(item.name)
    assert found == [], found


def _image_run(image: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", image,
                           *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_images_run_as_non_root_and_hold_only_their_side(images: None) -> None:
    """Both images run as 'app'; the client image has no server code and vice versa."""
    for image in ("fedfleet-server:0.1.0", "fedfleet-client:0.1.0",
                  "fedfleet-gateway:0.1.0"):
        user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}",
                               image], capture_output=True, text=True, check=True)
        assert user.stdout.strip() == "app"
    probe = "import importlib.util as u; print(bool(u.find_spec('fedfleet.server')), " \
            "bool(u.find_spec('fedfleet.client')))"
    assert _image_run("fedfleet-client:0.1.0", "-c", probe).stdout.split() == \
        ["False", "True"]
    assert _image_run("fedfleet-server:0.1.0", "-c", probe).stdout.split() == \
        ["True", "False"]


def test_a_crashed_server_container_comes_back_and_finishes_the_run(
        stack: tuple[str, dict[str, str], Path]) -> None:
    """The server container crashes after round 2; the run still finishes all rounds.

    Every process in it is killed; compose restarts it, the run continues from its last
    round, and the clients rejoin by themselves.
    """
    project, env, outputs = stack
    env = {**env, "FEDFLEET_ROUNDS": "5", "FEDFLEET_EXIT_WHEN_DONE": "0"}
    up = compose(project, env, "up", "--detach", "--no-build", timeout=600)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 900

    def records() -> dict[str, dict[str, object]]:
        found = {}
        for path in outputs.glob("run-*/metrics.json"):
            try:
                found[path.parent.name] = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
        return found

    while not any(len(r["rounds"]) >= 2 for r in records().values()):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, compose(project, env, "logs").stdout[-3000:]
        time.sleep(2)
    crash = compose(project, env, "exec", "-T", "server", "sh", "-c", "kill -9 -1",
                     timeout=60)
    assert crash.returncode in (0, 137, -9, 255), crash.stderr
    while not any(r["status"] == "completed" for r in records().values()):
        assert time.monotonic() < deadline, compose(project, env, "logs").stdout[-5000:]
        time.sleep(5)
    logs = compose(project, env, "logs", "--no-color", "server", timeout=120).stdout
    assert "was interrupted after round" in logs, logs[-3000:]
    final = next(r for r in records().values() if r["status"] == "completed")
    old = next(r for r in records().values() if r["status"] == "interrupted")
    rounds = final["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]  # type: ignore[index]
    assert final["run"]["resumed_from"]["run_id"] == old["run"]["run_id"]  # type: ignore[index]
    assert all(r["train_replies"] == 3 for r in rounds)  # type: ignore[index]
    assert rounds[-1]["central_accuracy"] > 0.8  # type: ignore[index]


def _records(outputs: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in outputs.glob("run-*/metrics.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # being written
    return found


def test_a_client_cut_off_the_network_for_30s_rejoins_and_contributes(
        stack: tuple[str, dict[str, str], Path]) -> None:
    """client-3 loses its network for 30 s mid-run; it comes back as the same node.

    Flower declares a node gone only after two missed heartbeats (~60 s); the rounds
    in flight do not wait for it: each closes once the other two have answered and the
    grace period has passed, naming client-3 with "no reply by the deadline". After
    the reconnect the device trains in every later round under the same node ID.
    """
    project, env, outputs = stack
    env = {**env, "FEDFLEET_ROUNDS": "8"}
    up = compose(project, env, "up", "--detach", "--no-build", timeout=600)
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 900
    while not any(len(r["rounds"]) >= 2 for r in _records(outputs).values()):
        assert time.monotonic() < deadline, compose(project, env, "logs").stdout[-3000:]
        time.sleep(1)
    container = f"{project}-client-3-1"
    network = f"{project}_fleet"
    subprocess.run(["docker", "network", "disconnect", network, container], check=True,
                   timeout=60)
    time.sleep(30)
    subprocess.run(["docker", "network", "connect", network, container], check=True,
                   timeout=60)
    while not any(r["status"] != "running" for r in _records(outputs).values()):
        assert time.monotonic() < deadline, compose(project, env, "logs").stdout[-5000:]
        time.sleep(5)
    logs = compose(project, env, "logs", "--no-color", "server", "client-3",
                    timeout=120).stdout
    record = next(iter(_records(outputs).values()))
    assert record["status"] == "completed", logs[-5000:]
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, 9))
    nodes = [sorted(c["node_id"] for c in r["clients"]
                    if "train_time_s" in c.get("device", {})) for r in rounds]
    assert len(nodes[0]) == 3 and nodes[-1] == nodes[0], (nodes, logs[-5000:])
    for row, trained in zip(rounds, nodes, strict=True):  # same three node IDs throughout
        missing = sorted(set(nodes[0]) - set(trained))
        assert set(trained) <= set(nodes[0]) and len(missing) <= 1, nodes
        assert [(e["node_id"], e["kind"]) for e in row["errors"]] == [
            (m, "deadline") for m in missing], row["errors"]
    assert len({m for t in nodes for m in set(nodes[0]) - set(t)}) <= 1, nodes
    client = compose(project, env, "logs", "--no-color", "client-3", timeout=120).stdout
    assert "Connection attempt failed, retrying in" in client, client[-3000:]
    assert "Connection successful after" in client, client[-3000:]  # Flower's backoff
    assert rounds[-1]["central_accuracy"] > 0.8


def _bad_datasets(root: Path) -> dict[str, tuple[Path, str]]:
    """Write three broken datasets; return name -> (mount dir, expected reason)."""
    import tensorflow as tf

    def png(path: Path, side: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(np.zeros((side, side, 1), np.uint8)).numpy())

    png(root / "corrupt" / "0" / "a.png", 8)
    (root / "corrupt" / "1" / "b.png").parent.mkdir(parents=True)
    (root / "corrupt" / "1" / "b.png").write_bytes(b"half a PNG\x89")
    png(root / "resized" / "0" / "a.png", 8)
    png(root / "resized" / "1" / "b.png", 12)  # the shape changes mid-dataset
    (root / "csv").mkdir()
    (root / "csv" / "d.csv").write_text("a,b,label\n1,2,0\n3,4,\n5,6,1\n")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user
    return {
        "corrupt": (root / "corrupt", "/data/1/b.png: not a readable image"),
        "resized": (root / "resized", "/data/1/b.png: image is (12, 12, 1), earlier "
                                      "images are (8, 8, 1); resize all images"),
        "csv": (root / "csv", "/data/d.csv:3: missing label"),
    }


def test_bad_data_on_a_device_is_reported_not_crash_looped(
        images: None, tmp_path: Path) -> None:
    """A client container with broken data names the file and reason and stays up.

    It checks the data again on its own and goes on to join once the data is fixed.
    """
    datasets = _bad_datasets(tmp_path / "data")
    started = {}
    try:
        for name, (folder, _) in datasets.items():
            data = "/data/d.csv" if name == "csv" else "/data"
            started[name] = subprocess.run(
                ["docker", "run", "--detach", "--restart", "on-failure:3",
                 "--network", "none", "-v", f"{folder}:/data:ro",
                 "-e", f"FEDFLEET_JOIN_DATA={data}", "-e", "FEDFLEET_JOIN_DATA_RETRY=2",
                 "-e", "FEDFLEET_JOIN_CONNECT_TIMEOUT=600",
                 "fedfleet-client:0.1.0", "join", "--server", "nowhere:8000",
                 "--insecure"], capture_output=True, text=True, check=True,
                timeout=120).stdout.strip()

        def logs(container: str) -> str:
            done = subprocess.run(["docker", "logs", container], capture_output=True,
                                  text=True, timeout=60, check=False)
            return done.stdout + done.stderr

        deadline = time.monotonic() + 180
        for name, (_, reason) in datasets.items():
            while logs(started[name]).count(reason) < 2:  # reported, then re-checked
                assert time.monotonic() < deadline, logs(started[name])[-2000:]
                time.sleep(2)
            state = json.loads(subprocess.run(
                ["docker", "inspect", started[name]], capture_output=True, text=True,
                check=True, timeout=60).stdout)[0]
            assert state["State"]["Running"] and state["RestartCount"] == 0, name
            assert "Traceback" not in logs(started[name]), logs(started[name])[-2000:]

        (tmp_path / "data" / "csv" / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
        while "Waiting for the server at nowhere:8000" not in logs(started["csv"]):
            assert time.monotonic() < deadline, logs(started["csv"])[-2000:]
            time.sleep(2)
    finally:
        for container in started.values():
            subprocess.run(["docker", "rm", "--force", container], capture_output=True,
                           timeout=120, check=False)


def test_up_builds_each_image_once_and_pulls_nothing() -> None:
    """A fresh `up --build` builds server, gateway and client once each; no registry."""
    # Prepare: a version no image has, as on a fresh clone
    env = {"FEDFLEET_VERSION": f"0.0.0-{uuid.uuid4().hex[:8]}"}
    project = f"fedfleet-dry-{uuid.uuid4().hex[:8]}"
    # Execute
    config = compose(project, env, "config", "--format", "json", timeout=60)
    dry = compose(project, env, "--dry-run", "up", "--build", timeout=120)
    # Assert
    assert config.returncode == 0, config.stderr
    services = json.loads(config.stdout)["services"]
    policies = {name: s.get("pull_policy") for name, s in services.items()}
    assert policies == dict.fromkeys(services, "never")
    builders: dict[str, list[str]] = {}
    for name, service in services.items():
        if "build" in service:
            builders.setdefault(service["image"], []).append(name)
    assert sorted(builders.values()) == [["client-1"], ["gateway"], ["server"]]
    assert {s["image"] for s in services.values()} == set(builders)
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output
    assert "Pull" not in output and "registry" not in output
    built = {image: len(re.findall(rf"Image {re.escape(image)} Building", output))
             for image in builders}
    assert len(set(built.values())) == 1 and min(built.values()) > 0, built
