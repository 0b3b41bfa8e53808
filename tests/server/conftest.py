"""Fixtures for server tests: a finished run folder with a really trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from records import sample_record


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a run folder as the ServerApp leaves it after 3 rounds on builtin:digits.

    The CNN trains for two epochs per "round" (seconds); every round's checkpoint,
    the final model and a metrics.json with the real test accuracies are written.
    """
    import keras

    from fedfleet.shared.data import load_dataset
    from fedfleet.shared.models import build_model

    run_dir = tmp_path_factory.mktemp("outputs") / "run-4242"
    (run_dir / "checkpoints").mkdir(parents=True)
    keras.utils.set_random_seed(7)
    train = load_dataset("builtin:digits")
    test = load_dataset("builtin:digits", split="test")
    model = build_model("cnn", (8, 8, 1), 10)
    record = sample_record(3)
    for row in record["rounds"]:
        model.fit(train.x, train.y, epochs=2, batch_size=32, verbose=0)
        loss, acc = model.evaluate(test.x, test.y, verbose=0)
        row["central_loss"], row["central_accuracy"] = float(loss), float(acc)
        model.save(run_dir / "checkpoints" / row["checkpoint"])
    model.save(run_dir / "final_model.keras")
    (run_dir / "metrics.json").write_text(json.dumps(record))
    assert np.isfinite(record["rounds"][-1]["central_accuracy"])
    return run_dir
