"""fedfleet predict: every input format, quantized models, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fedfleet.shared.cli import cli
from fedfleet.shared.data import load_dataset
from fedfleet.shared.errors import DataError, FedfleetError
from fedfleet.shared.predict import TFLiteModel, predict, read_inputs


def _convert(model: object, int8_io: bool = False, sample: np.ndarray | None = None
             ) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8_io:
        assert sample is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([sample[i:i + 1]] for i in range(100))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Return a digits CNN as float and int8-in/int8-out .tflite, and a 3-feature MLP."""
    import keras

    from fedfleet.shared.models import build_model

    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("models")
    train = load_dataset("builtin:digits")
    cnn = build_model("cnn", (8, 8, 1), 10)
    cnn.fit(train.x, train.y, epochs=4, verbose=0)
    mlp = build_model("mlp", (3,), 2)
    rows = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    mlp.fit(rows, (rows[:, 0] > 0).astype(int), epochs=20, verbose=0)
    paths = {"cnn": folder / "cnn.tflite", "int8": folder / "int8.tflite",
             "mlp": folder / "mlp.tflite"}
    paths["cnn"].write_bytes(_convert(cnn))
    paths["int8"].write_bytes(_convert(cnn, int8_io=True, sample=train.x))
    paths["mlp"].write_bytes(_convert(mlp))
    return paths


def _digit_pngs(folder: Path, rgb: bool = False, size: int = 8) -> dict[str, int]:
    test = load_dataset("builtin:digits", split="test")
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(10):
        pixels = (test.x[i, :, :, 0] * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)
        name = folder / f"{i:02d}.png"
        (image.convert("RGB") if rgb else image).save(name)
        labels[str(name)] = int(test.y[i])
    return labels


@pytest.mark.parametrize("kind", ["cnn", "int8"])
def test_images_are_classified_like_the_test_set(models: dict[str, Path], tmp_path: Path,
                                                 kind: str) -> None:
    """Grayscale PNGs of test digits: mostly right, float and integer-quantized I/O."""
    labels = _digit_pngs(tmp_path / "digits")
    answers = predict(models[kind], [str(tmp_path / "digits")])
    assert [a.input for a in answers] == sorted(labels)
    right = sum(a.label == labels[a.input] for a in answers)
    assert right >= 8 and all(0 < a.probability <= 1.0001 for a in answers)


def test_colour_and_larger_images_are_converted(models: dict[str, Path], tmp_path: Path
                                                ) -> None:
    """RGB 32x32 files become the model's 8x8 grayscale input."""
    labels = _digit_pngs(tmp_path / "big", rgb=True, size=32)
    x, names = read_inputs([str(tmp_path / "big")], TFLiteModel(models["cnn"]).input_shape)
    assert x.shape == (10, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    answers = predict(models["cnn"], [str(tmp_path / "big")])
    assert sum(a.label == labels[a.input] for a in answers) >= 6


def test_npz_and_csv_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    """An .npz of uint8 images (scaled like training) and CSV rows (label left out)."""
    test = load_dataset("builtin:digits", split="test")
    np.savez(tmp_path / "d.npz", x=(test.x[:20, :, :, 0] * 255).round().astype(np.uint8))
    answers = predict(models["cnn"], [str(tmp_path / "d.npz")])
    assert [a.input for a in answers][:2] == ["d.npz[0]", "d.npz[1]"]
    assert sum(a.label == y for a, y in zip(answers, test.y[:20], strict=True)) >= 16
    (tmp_path / "rows.csv").write_text("a,label,b,c\n2.0,1,0,0\n-2.0,0,0,0\n")
    rows = predict(models["mlp"], [str(tmp_path / "rows.csv")])
    assert [(r.input, r.label) for r in rows] == [("rows.csv:2", 1), ("rows.csv:3", 0)]


def test_command_prints_table_and_json(models: dict[str, Path], tmp_path: Path) -> None:
    """An explicit MODEL argument, then the inputs."""
    _digit_pngs(tmp_path / "digits")
    result = CliRunner().invoke(cli, ["predict", str(models["cnn"]),
                                      str(tmp_path / "digits" / "00.png"), "--format",
                                      "json"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    assert set(answer) == {"input", "class", "probability"}


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b"\x89PNG half"), "not a readable image"),
    (lambda p: p.with_suffix(".txt").write_text("x"), "does not exist"),
])
def test_bad_inputs_are_named(models: dict[str, Path], tmp_path: Path, make: object,
                              message: str) -> None:
    """A broken image or a missing file: DataError naming it."""
    path = tmp_path / "x.png"
    make(path)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        predict(models["cnn"], [str(path)])


def test_wrong_shapes_and_models_are_one_line(models: dict[str, Path], tmp_path: Path
                                              ) -> None:
    """CSV rows for an image model, a file that is no model, no model at all."""
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"samples have shape \(2,\) but the model takes"):
        predict(models["cnn"], [str(tmp_path / "rows.csv")])
    (tmp_path / "fake.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(FedfleetError, match="is not a TFLite model"):
        predict(tmp_path / "fake.tflite", [str(tmp_path / "rows.csv")])
    result = CliRunner().invoke(cli, ["predict", "--home", str(tmp_path / "empty"),
                                      str(tmp_path / "rows.csv")])
    assert result.exit_code == 1
    assert "Error: no model in" in result.output and "give a .tflite file" in result.output
