"""A run's models.json: digests that match the files, who contributed, verification."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedfleet.shared.cli import cli
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.registry import REGISTRY_FILE, read_registry, register_checkpoint


def _row(r: int, **extra: Any) -> dict[str, Any]:
    clients = [{"node_id": "11", "weight": 10.0, "device": {"num-examples": 10.0}},
               {"node_id": "22", "weight": 9.0, "device": {"num-examples": 9.0}},
               {"node_id": "44", "device": {"eval_accuracy": 0.5}}]  # evaluated only
    errors = [{"phase": "train", "node_id": "33", "kind": "rejected",
               "error": "rejected: update norm"}]
    return {"round": r, "central_accuracy": 0.5 + r / 10, "train_loss": 1.0 / r,
            "clients": clients, "errors": errors, **extra}


def _checkpoints(run_dir: Path, rounds: int) -> list[Path]:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(1, rounds + 1):
        path = run_dir / "checkpoints" / f"round-{r:03d}.keras"
        path.write_bytes(f"model of round {r}".encode() * 100)
        paths.append(path)
    return paths


def test_registered_digests_match_the_files(tmp_path: Path) -> None:
    """Each entry: the file, its real sha256 and size, round, metrics, contributors."""
    for r, path in enumerate(_checkpoints(tmp_path, 3), start=1):
        register_checkpoint(tmp_path, _row(r), path)
    entries = read_registry(tmp_path)
    assert entries is not None and [e["round"] for e in entries] == [1, 2, 3]
    for entry in entries:
        data = (tmp_path / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["nodes"] == ["11", "22"]  # not the rejected 33, not 44 (no update)
    assert entries[2]["metrics"] == {"central_accuracy": 0.8, "train_loss": 1 / 3}


def test_registering_again_replaces_and_final_comes_last(tmp_path: Path) -> None:
    """One entry per file; the final model is flagged and listed after the rounds."""
    paths = _checkpoints(tmp_path, 2)
    final = tmp_path / "final_model.keras"
    final.write_bytes(b"final")
    register_checkpoint(tmp_path, _row(2), final)
    register_checkpoint(tmp_path, _row(1), paths[0])
    paths[0].write_bytes(b"rewritten")
    register_checkpoint(tmp_path, _row(1), paths[0])
    row = _row(2)
    row["errors"].append({"phase": "train", "node_id": "11", "kind": "error", "error": "x"})
    register_checkpoint(tmp_path, row, paths[1])
    entries = read_registry(tmp_path) or []
    assert [(e["file"], e["final"]) for e in entries] == [
        ("checkpoints/round-001.keras", False), ("checkpoints/round-002.keras", False),
        ("final_model.keras", True)]
    assert entries[0]["sha256"] == hashlib.sha256(b"rewritten").hexdigest()
    assert entries[1]["nodes"] == ["22"]  # a node with a train error is out


def test_concurrent_registrations_lose_nothing(tmp_path: Path) -> None:
    """Twenty writers at once (a round and a report, say): every entry survives."""
    paths = _checkpoints(tmp_path, 20)
    threads = [threading.Thread(target=register_checkpoint, args=(tmp_path, _row(r), p))
               for r, p in enumerate(paths, start=1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_registry(tmp_path) or []) == 20


def test_a_file_outside_the_run_folder_is_refused(tmp_path: Path) -> None:
    """Only the run's own checkpoints go into its registry."""
    other = tmp_path / "other.keras"
    other.write_bytes(b"x")
    (tmp_path / "run").mkdir()
    with pytest.raises(FedfleetError, match="is not inside the run folder"):
        register_checkpoint(tmp_path / "run", _row(1), other)


def _run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run-1"
    for r, path in enumerate(_checkpoints(run_dir, 2), start=1):
        register_checkpoint(run_dir, _row(r, checkpoint=path.name), path)
    (run_dir / "metrics.json").write_text(json.dumps({"rounds": [_row(1), _row(2)]}))
    return run_dir


def test_models_command_lists_and_verifies(tmp_path: Path) -> None:
    """'fedfleet models RUN_DIR --verify': ok for intact files; JSON carries digests."""
    run_dir = _run(tmp_path)
    result = CliRunner().invoke(cli, ["models", str(run_dir), "--verify"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["round", "file", "sha256", "test", "acc", "devices",
                                "verified"]
    assert [line.split()[-1] for line in lines[1:]] == ["ok", "ok"]
    listed = json.loads(CliRunner().invoke(cli, ["models", str(run_dir), "--format",
                                                 "json"]).stdout)
    assert [e["sha256"] for e in listed] == [e["sha256"] for e in read_registry(run_dir) or []]


def test_verify_catches_a_changed_or_missing_file(tmp_path: Path) -> None:
    """A checkpoint changed after registration is MISMATCH; exit 1 with one line."""
    run_dir = _run(tmp_path)
    (run_dir / "checkpoints" / "round-001.keras").write_bytes(b"tampered")
    (run_dir / "checkpoints" / "round-002.keras").unlink()
    result = CliRunner().invoke(cli, ["models", str(run_dir), "--verify"])
    assert result.exit_code == 1
    assert "MISMATCH" in result.stdout and "missing" in result.stdout
    assert "Error: 2 file(s) failed verification" in result.output


def test_a_tampered_registry_cannot_point_outside_the_run(tmp_path: Path) -> None:
    """models.json naming ../../etc/passwd is reported, not hashed."""
    run_dir = _run(tmp_path)
    data = json.loads((run_dir / REGISTRY_FILE).read_text())
    data["models"][0]["file"] = "../../../etc/passwd"
    (run_dir / REGISTRY_FILE).write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["models", str(run_dir), "--verify", "--format",
                                      "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["verified"] == "outside"


def test_an_older_run_is_listed_from_its_record(tmp_path: Path) -> None:
    """No models.json: the checkpoints named in metrics.json, with a note."""
    run_dir = tmp_path / "run-2"
    _checkpoints(run_dir, 2)
    (run_dir / "metrics.json").write_text(json.dumps(
        {"rounds": [_row(1, checkpoint="round-001.keras"),
                    _row(2, checkpoint="round-002.keras")]}))
    result = CliRunner().invoke(cli, ["models", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "has no models.json" in result.stderr
    assert "checkpoints/round-002.keras" in result.stdout
