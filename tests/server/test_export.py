"""Export: every format agrees with the Keras model, and a disagreeing one is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedfleet.server.results import export
from fedfleet.server.results.export import ExportRefused, export_model
from fedfleet.shared.cli import cli
from fedfleet.shared.data import load_dataset
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.predict import run_tflite
from fedfleet.shared.recordview import load_record


@pytest.fixture(scope="module")
def keras_outputs(trained_run: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Return the final Keras model's outputs on the digits test set, labels, accuracy."""
    import keras

    test = load_dataset("builtin:digits", split="test")
    model = keras.models.load_model(trained_run / "final_model.keras")
    out = np.asarray(model(test.x, training=False))
    return out, test.y, float(np.mean(out.argmax(axis=1) == test.y))


@pytest.mark.parametrize(("quantize", "tolerance"), [("none", 1e-4), ("float16", 1e-2)])
def test_float_tflite_predicts_like_keras(
        trained_run: Path, tmp_path: Path, keras_outputs: tuple[np.ndarray, np.ndarray, float],
        quantize: str, tolerance: float) -> None:
    """The written .tflite, run in LiteRT, gives Keras' probabilities within tolerance."""
    out = tmp_path / "model.tflite"
    result = export_model(trained_run, load_record(trained_run), "tflite", quantize, out=out)
    expected, labels, keras_acc = keras_outputs
    got = run_tflite(out, load_dataset("builtin:digits", split="test").x)
    assert np.max(np.abs(got - expected)) <= tolerance
    assert result.max_diff == pytest.approx(float(np.max(np.abs(got - expected))), abs=1e-6)
    assert result.keras_accuracy == pytest.approx(keras_acc)
    assert result.bytes == out.stat().st_size and result.samples == len(labels)
    assert keras_acc > 0.9


def test_int8_tflite_is_within_two_points_and_smaller(
        trained_run: Path, tmp_path: Path,
        keras_outputs: tuple[np.ndarray, np.ndarray, float]) -> None:
    """Full-integer quantization keeps accuracy within 2 pp at about a quarter the size."""
    floats = export_model(trained_run, load_record(trained_run), "tflite",
                          out=tmp_path / "f.tflite")
    result = export_model(trained_run, load_record(trained_run), "tflite", "int8",
                          out=tmp_path / "q.tflite")
    _, labels, keras_acc = keras_outputs
    got = run_tflite(tmp_path / "q.tflite", load_dataset("builtin:digits", split="test").x)
    assert abs(float(np.mean(got.argmax(axis=1) == labels)) - keras_acc) <= 0.02
    assert result.bytes < floats.bytes / 2


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_keras_and_savedmodel_round_trip(trained_run: Path, tmp_path: Path, fmt: str
                                         ) -> None:
    """A .keras copy of round 2 and a SavedModel folder of the final model agree."""
    out = tmp_path / ("m.keras" if fmt == "keras" else "m.savedmodel")
    result = export_model(trained_run, load_record(trained_run), fmt,
                          server_round=2 if fmt == "keras" else None, out=out)
    assert result.max_diff <= export.TOLERANCES[(fmt, "none")]
    assert out.is_file() if fmt == "keras" else (out / "saved_model.pb").is_file()
    assert result.server_round == (2 if fmt == "keras" else 3)


def test_a_disagreeing_export_is_refused_and_nothing_is_written(
        trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond tolerance: one line with the numbers, exit 1, no file, no leftovers."""
    monkeypatch.setitem(export.TOLERANCES, ("tflite", "float16"), 1e-9)
    out = tmp_path / "exports" / "m.tflite"
    result = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "tflite",
                                      "--quantize", "float16", "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the float16 tflite export differs from the "
                                    "Keras model by up to ")
    assert "(tolerance 1e-09) on 360 samples of builtin:digits; nothing was written" \
        in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "exports").exists()


def test_an_int8_export_that_loses_accuracy_is_refused(
        trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 rule is accuracy, stated in pp."""
    monkeypatch.setattr(export, "INT8_MAX_ACCURACY_DELTA", -1.0)
    with pytest.raises(ExportRefused, match="pp apart"):
        export_model(trained_run, load_record(trained_run), "tflite", "int8",
                     out=tmp_path / "q.tflite")
    assert list(tmp_path.iterdir()) == []


def test_export_command_prints_the_comparison(trained_run: Path, tmp_path: Path) -> None:
    """The table a user reads: format, size, max diff, both accuracies."""
    out = tmp_path / "m.tflite"
    result = CliRunner().invoke(cli, ["export", str(trained_run), "--format", "tflite",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    header, values, wrote = result.output.strip().splitlines()
    assert header.split() == ["format", "quantize", "size", "max", "diff", "keras", "acc",
                              "exported", "acc", "samples"]
    assert values.split()[:2] == ["tflite", "none"] and out.is_file()
    assert wrote.startswith(f"wrote {out} (round 3 model, verified on builtin:digits")


def test_test_data_can_be_given(trained_run: Path, tmp_path: Path) -> None:
    """--data: an .npz of samples the user holds."""
    test = load_dataset("builtin:digits", split="test")
    np.savez(tmp_path / "mine.npz", x=(test.x[:50] * 255).astype(np.uint8), y=test.y[:50])
    result = export_model(trained_run, load_record(trained_run), "tflite",
                          out=tmp_path / "m.tflite", data=str(tmp_path / "mine.npz"))
    assert result.samples == 50 and result.data.endswith("mine.npz")


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "keras", "--quantize", "int8"], "--quantize int8 applies to --format "
                                                  "tflite only"),
    (["--format", "tflite", "--round", "9"], "has no checkpoint of round 9 (found: "
                                            "round-001.keras, round-002.keras, "
                                            "round-003.keras)"),
    (["--format", "tflite", "--data", "/no/such.npz"], "data path /no/such.npz does not "
                                                      "exist"),
])
def test_bad_requests_are_one_line(trained_run: Path, args: list[str], message: str) -> None:
    """Wrong combinations and missing files end in one line."""
    result = CliRunner().invoke(cli, ["export", str(trained_run), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_no_model_in_the_folder(tmp_path: Path) -> None:
    """A run that never finished a round has nothing to export."""
    from fedfleet.shared.recordview import RecordView

    with pytest.raises(FedfleetError, match="has no finished round"):
        export_model(tmp_path, RecordView({}), "tflite")
