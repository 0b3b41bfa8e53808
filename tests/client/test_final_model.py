"""The model goes home: the ClientApp's final-model handler and the server's sender.

Real Flower Message objects drive the real ClientApp in-process; a fake grid routes
the server's messages to it, so both sides' code runs as in a deployment.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakegrid import StubGrid
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from no_tensorflow import no_tensorflow_cli

from fedfleet.client import client_app
from fedfleet.server.run.delivery import final_model_info, send_final_model
from fedfleet.shared import delivery
from fedfleet.shared.errors import ConfigError, ModelMismatchError
from fedfleet.shared.fileio import weights_digest
from fedfleet.shared.modelstore import read_index
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__

SETTINGS = RunSettings(fedfleet_version=__version__)
CLASSES = "zero,one,two,three,four,five,six,seven,eight,nine"
METRICS = {"central_accuracy": 0.93, "central_loss": 0.2}


pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture(scope="module")
def weights() -> list[np.ndarray]:
    """Weights of the run's CNN after one epoch on the digits (accuracy well above 50%)."""
    import keras

    from fedfleet.shared.data import load_dataset
    from fedfleet.shared.models import build_model

    keras.utils.set_random_seed(3)
    train = load_dataset("builtin:digits")
    model = build_model("cnn", (8, 8, 1), 10)
    model.fit(train.x, train.y, epochs=3, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]


def _message(weights: list[np.ndarray], server_round: int = 5,
             digest: str | None = None, node: int = 5) -> Message:
    info = delivery.pack_info(server_round, METRICS, digest or weights_digest(weights))
    return Message(RecordDict({"arrays": ArrayRecord(weights),
                               delivery.INFO_KEY: ConfigRecord(dict(info))}),
                   node, delivery.MESSAGE_TYPE)


def _context(home: Path | None, **node: Any) -> Context:
    config: dict[str, Any] = {"data-path": "builtin:digits", "class-names": CLASSES, **node}
    if home is not None:
        config["fedfleet-home"] = str(home)
    return Context(run_id=77, node_id=5, node_config=config, state=RecordDict(),
                   run_config=dict(SETTINGS.to_run_config()))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_stored(home: Path, weights: list[np.ndarray], reply: Message) -> dict[str, Any]:
    answer = reply.content.config_records[delivery.INFO_KEY]
    (entry,) = read_index(home)
    folder = home / "models"
    keras_file, tflite_file = folder / "run-77-round-005.keras", folder / "run-77-round-005.tflite"
    assert entry["files"] == {"keras": keras_file.name, "tflite": tflite_file.name}
    assert entry["sha256"] == {"keras": _sha(keras_file), "tflite": _sha(tflite_file)}
    assert answer["keras-sha256"] == _sha(keras_file)
    assert answer["tflite-sha256"] == _sha(tflite_file)
    assert answer["weights-sha256"] == entry["weights_sha256"] == weights_digest(weights)
    assert (entry["run_id"], entry["round"], entry["metrics"]) == (77, 5, METRICS)
    assert entry["class_names"][3] == "three" and entry["input_shape"] == [8, 8, 1]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [keras_file.name, tflite_file.name, "index.json", ".index.json.lock"])

    import keras

    from fedfleet.shared.data import load_dataset
    from fedfleet.shared.predict import run_tflite

    stored = keras.models.load_model(keras_file)
    for a, b in zip(stored.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    x = load_dataset("builtin:digits", split="test").x
    lite = run_tflite(tflite_file, x)
    assert np.max(np.abs(lite - stored.predict(x, verbose=0))) < 1e-4
    return entry


def test_handler_stores_keras_tflite_and_index_in_process(
        tmp_path: Path, weights: list[np.ndarray]) -> None:
    """No warm trainer: the ClientApp converts itself; digests match the files."""
    reply = client_app.app(_message(weights), _context(tmp_path))
    _check_stored(tmp_path, weights, reply)


def test_handler_stores_through_the_warm_trainer(
        tmp_path: Path, served: Path, weights: list[np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a trainer socket, the trainer builds, saves and converts the model."""
    monkeypatch.setattr(client_app, "_trainer", None)  # in-process would now fail
    home = tmp_path / "home"
    reply = client_app.app(_message(weights), _context(home, **{"trainer-socket":
                                                                str(served)}))
    _check_stored(home, weights, reply)


def test_weights_that_do_not_match_the_digest_are_not_stored(
        tmp_path: Path, weights: list[np.ndarray]) -> None:
    """A corrupted or swapped payload: refused, and nothing lands in the store."""
    with pytest.raises(ModelMismatchError, match="do not match the digest"):
        client_app.app(_message(weights, digest="0" * 64), _context(tmp_path))
    assert read_index(tmp_path) == [] and not any(tmp_path.rglob("*.*"))


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    """Shapes that are not the run's model: refused before anything is written."""
    wrong = [np.zeros((3, 3), np.float32)]
    with pytest.raises(ModelMismatchError):
        client_app.app(_message(wrong), _context(tmp_path))
    assert read_index(tmp_path) == []


@pytest.mark.parametrize("info", [
    {"round": "../../etc", delivery.WEIGHTS_DIGEST: "fill"},
    {"round": -1, delivery.WEIGHTS_DIGEST: "fill"},
    {"round": 10**9, delivery.WEIGHTS_DIGEST: "fill"},
    {"round": True, delivery.WEIGHTS_DIGEST: "fill"},
    {"round": 3},
    {"round": 3, delivery.WEIGHTS_DIGEST: 12345},
])
def test_a_lying_server_cannot_choose_paths_or_skip_the_digest(
        tmp_path: Path, weights: list[np.ndarray], info: dict[str, Any]) -> None:
    """Round and digest are checked; file names come from integers only."""
    if info.get(delivery.WEIGHTS_DIGEST) == "fill":  # right digest, wrong round
        info[delivery.WEIGHTS_DIGEST] = weights_digest(weights)
    msg = Message(RecordDict({"arrays": ArrayRecord(weights),
                              delivery.INFO_KEY: ConfigRecord(info)}), 5,
                  delivery.MESSAGE_TYPE)
    with pytest.raises(Exception, match="round|digest"):
        client_app.app(msg, _context(tmp_path))
    assert read_index(tmp_path) == []
    assert not any(tmp_path.rglob("*.keras"))


def test_junk_metrics_are_dropped(tmp_path: Path, weights: list[np.ndarray]) -> None:
    """Only finite numbers under plain names reach the index."""
    info = delivery.pack_info(5, {}, weights_digest(weights))
    info.update({"metric.central_accuracy": 0.9, "metric.</x>": 1.0,
                 "metric.nan": float("nan"), "metric.text": "hello"})
    msg = Message(RecordDict({"arrays": ArrayRecord(weights),
                              delivery.INFO_KEY: ConfigRecord(dict(info))}), 5,
                  delivery.MESSAGE_TYPE)
    client_app.app(msg, _context(tmp_path))
    assert read_index(tmp_path)[0]["metrics"] == {"central_accuracy": 0.9}


def test_a_device_without_a_home_says_how_to_get_one(
        weights: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """A SuperNode not started by 'fedfleet join' has no home: one clear error."""
    monkeypatch.delenv("FLWR_HOME", raising=False)
    with pytest.raises(ConfigError, match="fedfleet join --home"):
        client_app.app(_message(weights), _context(None))


class RoutingGrid(StubGrid):
    """A grid that hands each message to a real ClientApp call, like a SuperLink would.

    Nodes in ``silent`` never answer; a ClientApp exception becomes an error reply
    with Flower's reason format.
    """

    def __init__(self, contexts: dict[int, Context], silent: set[int]) -> None:
        self.contexts, self.silent = contexts, silent
        self.replies: dict[str, Message] = {}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            ids.append(msg.metadata.message_id)
            node = msg.metadata.dst_node_id
            if node in self.silent:
                continue
            TaskIdentity.node_id = node
            try:
                reply = client_app.app(msg, self.contexts[node])
            except Exception as err:  # what Flower's ClientApp runner does
                reason = f"<class '{type(err).__module__}.{type(err).__name__}'>:<'{err}'>"
                reply = Message(Error(code=1, reason=reason), reply_to=msg)
            self.replies[msg.metadata.message_id] = reply
        TaskIdentity.node_id = 0
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def test_send_final_model_reports_each_device(
        tmp_path: Path, weights: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two devices store it, one cannot (no home), one never answers: four outcomes."""
    monkeypatch.delenv("FLWR_HOME", raising=False)
    contexts = {1: _context(tmp_path / "a"), 2: _context(tmp_path / "b"),
                3: _context(None), 4: _context(tmp_path / "d")}
    grid = RoutingGrid(contexts, silent={4})
    record = {"rounds": [{"round": 5, **METRICS, "clients": []}]}
    started = time.monotonic()
    outcomes = send_final_model(grid, [1, 2, 3, 4], ArrayRecord(weights),
                                final_model_info(record), timeout=2)
    assert time.monotonic() - started < 60
    assert outcomes[1].startswith("stored models/run-77-round-005 (keras sha256 ")
    assert outcomes[2].startswith("stored models/run-77-round-005")
    assert outcomes[3].startswith("failed: ConfigError: this device has no fedfleet home")
    assert outcomes[4] == "no reply within 2s"
    for home in (tmp_path / "a", tmp_path / "b"):
        assert read_index(home)[0]["metrics"] == METRICS


def test_predict_answers_from_the_stored_model_without_tensorflow(
        tmp_path: Path, weights: list[np.ndarray]) -> None:
    """'fedfleet predict' on the device: newest stored model, PNG in, class out, no TF."""
    from PIL import Image

    from fedfleet.shared.data import load_dataset

    client_app.app(_message(weights), _context(tmp_path / "home"))
    test = load_dataset("builtin:digits", split="test")
    picks = [int(np.flatnonzero(test.y == digit)[0]) for digit in (3, 7)]
    for digit, i in zip((3, 7), picks, strict=True):
        Image.fromarray((test.x[i, :, :, 0] * 255).round().astype(np.uint8)).save(
            tmp_path / f"digit-{digit}.png")
    done = no_tensorflow_cli("predict", "--home", str(tmp_path / "home"), "--format",
                              "json", "digit-3.png", "digit-7.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stderr  # nothing of TensorFlow, Keras or Flower loaded
    answers = json.loads(done.stdout)
    assert [a["input"] for a in answers] == ["digit-3.png", "digit-7.png"]
    assert [a["class"] for a in answers] == [3, 7]
    assert [a["class_name"] for a in answers] == ["three", "seven"]
    assert all(0.5 < a["probability"] <= 1 for a in answers)
    table = no_tensorflow_cli("predict", "--home", str(tmp_path / "home"),
                               "digit-3.png", cwd=tmp_path)
    assert table.stdout.splitlines()[1].split() == ["digit-3.png", "3", "(three)",
                                                    table.stdout.split()[-1]]
    listing = no_tensorflow_cli("models", "--home", str(tmp_path / "home"), "--verify",
                                 cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "77" in listing.stdout and "keras ok tflite ok" in listing.stdout
    assert "HEAVY=\n" in listing.stderr


def test_help_loads_no_tensorflow(tmp_path: Path) -> None:
    """'fedfleet --help' lists every command without importing TensorFlow."""
    done = no_tensorflow_cli("--help", cwd=tmp_path, block="tensorflow,keras")
    assert done.returncode == 0, done.stderr
    assert "tensorflow" not in done.stderr.split("HEAVY=")[1]
    assert "predict" in done.stdout and "export" in done.stdout
