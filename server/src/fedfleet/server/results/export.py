"""Export a run's model for deployment, verified before anything is written.

Formats: ``keras`` (a ``.keras`` file), ``savedmodel`` (a TensorFlow SavedModel
folder, for TF Serving and other TensorFlow runtimes) and ``tflite`` (a LiteRT
flatbuffer, optionally quantized to ``float16`` or ``int8``). Every export is built
in a temporary file next to its destination, run on the test set beside the Keras
model, and moved into place only if it agrees with it (see :data:`TOLERANCES`);
otherwise nothing is written and :class:`ExportRefused` says by how much it differed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.shared.atomic import new_temp_dir
from fedfleet.shared.constants import CHECKPOINT_DIR, DEFAULT_DATASET, FINAL_MODEL
from fedfleet.shared.errors import ConfigError, FedfleetError
from fedfleet.shared.predict import run_tflite
from fedfleet.shared.recordview import RecordView

FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZE = ("none", "float16", "int8")

TOLERANCES: dict[tuple[str, str], float] = {
    ("keras", "none"): 1e-6,
    ("savedmodel", "none"): 1e-4,
    ("tflite", "none"): 1e-4,
    ("tflite", "float16"): 1e-2,
}
"""Largest difference allowed between the exported model's and the Keras model's
outputs (class probabilities) on any test sample."""

INT8_MAX_ACCURACY_DELTA = 0.02
"""An int8 model is accepted when its test accuracy is within 2 percentage points of
the Keras model's (its probabilities legitimately differ by a few hundredths)."""

MAX_SAMPLES = 2000
"""Test samples the verification runs (the first ones, in the data's order)."""

REPRESENTATIVE_SAMPLES = 200
"""Samples the int8 converter calibrates activation ranges with."""


class ExportRefused(FedfleetError):
    """The exported model does not agree with the Keras model; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    """What was exported, and how it compared with the Keras model."""

    path: Path
    format: str
    quantize: str
    server_round: int | None
    bytes: int
    max_diff: float
    keras_accuracy: float
    exported_accuracy: float
    samples: int
    data: str

    @property
    def criterion(self) -> str:
        """Return the rule the export was checked against, in words."""
        if self.quantize == "int8":
            return f"accuracy within {INT8_MAX_ACCURACY_DELTA * 100:.0f} pp of Keras"
        return f"max difference <= {TOLERANCES[(self.format, self.quantize)]:g}"


def check_choice(fmt: str, quantize: str) -> None:
    """Refuse a format/quantization pair that does not exist.

    Raises
    ------
    ConfigError
        For an unknown format, or quantization of anything but ``tflite``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantization {quantize!r}: use one of "
                          f"{', '.join(QUANTIZE)}")
    if quantize != "none" and fmt != "tflite":
        raise ConfigError(f"--quantize {quantize} applies to --format tflite only")


def model_file(run_dir: Path, record: RecordView, server_round: int | None
               ) -> tuple[Path, int | None]:
    """Return the checkpoint of ``server_round`` (default: the final model) and its round.

    Raises
    ------
    FedfleetError
        If the run has no such model file.
    """
    if server_round is None:
        if (run_dir / FINAL_MODEL).is_file():
            return run_dir / FINAL_MODEL, record.last_round
        server_round = record.last_round
        if server_round is None:
            raise FedfleetError(f"{run_dir} has no finished round and no {FINAL_MODEL} "
                                "to export")
    path = run_dir / CHECKPOINT_DIR / f"round-{server_round:03d}.keras"
    if not path.is_file():
        have = sorted(p.name for p in (run_dir / CHECKPOINT_DIR).glob("round-*.keras"))
        raise FedfleetError(f"{run_dir} has no checkpoint of round {server_round} "
                            f"(found: {', '.join(have) or 'none'})")
    return path, server_round


def default_out(run_dir: Path, fmt: str, quantize: str, server_round: int | None) -> Path:
    """Return ``RUN_DIR/exports/round-NNN[-QUANT].{keras,tflite}`` or ``...savedmodel``."""
    stem = f"round-{server_round:03d}" if server_round is not None else "final"
    if quantize != "none":
        stem += f"-{quantize}"
    suffix = {"keras": ".keras", "tflite": ".tflite", "savedmodel": ".savedmodel"}[fmt]
    return run_dir / "exports" / f"{stem}{suffix}"


def test_data(record: RecordView, data: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return the samples and labels to verify on: ``data``, else the run's eval data.

    Raises
    ------
    FedfleetError
        If there is no data to verify on, or it does not fit the model.
    """
    from fedfleet.shared.data import fit_to_shape, load_dataset
    from fedfleet.shared.settings import parse_shape

    source = data or record.setting("eval-data", DEFAULT_DATASET)
    if not source:
        raise FedfleetError("the run had no evaluation data (eval-data ''): give test "
                            "data to verify the export with --data")
    dataset = load_dataset(source, split="test")
    shape = record.setting("input-shape")
    if shape:
        dataset = fit_to_shape(dataset, parse_shape(str(shape)))
    return dataset.x[:MAX_SAMPLES], dataset.y[:MAX_SAMPLES], str(source)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence TensorFlow's converter chatter (Python prints and native logs)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _tflite_bytes(model: Any, quantize: str, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [representative[i:i + 1].astype(np.float32)] for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs ..." (float I/O)
        return bytes(converter.convert())


def _build(model: Any, fmt: str, quantize: str, target: Path, x: np.ndarray) -> np.ndarray:
    """Write the export to ``target``; return its outputs on ``x``."""
    if fmt == "keras":
        import keras

        model.save(target)
        return np.asarray(keras.models.load_model(target, compile=False)(x, training=False))
    if fmt == "savedmodel":
        import tensorflow as tf

        with _quiet():
            model.export(str(target), format="tf_saved_model")
        loaded = tf.saved_model.load(str(target))
        return np.asarray(loaded.serve(tf.constant(x, dtype=tf.float32)))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(x))[:REPRESENTATIVE_SAMPLES]
    target.write_bytes(_tflite_bytes(model, quantize, x[pick]))
    return run_tflite(target, x)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _move_into_place(built: Path, out: Path) -> None:
    if not (out.is_dir() and built.is_dir()):
        if out.is_dir():
            raise FedfleetError(f"{out} is a folder; give a file name with --out")
        os.replace(built, out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(built, out)
    shutil.rmtree(old, ignore_errors=True)


def export_model(run_dir: Path, record: RecordView, fmt: str, quantize: str = "none",
                 server_round: int | None = None, out: Path | None = None,
                 data: str | None = None) -> ExportResult:
    """Export a run's model to ``out`` after checking it agrees with the Keras model.

    Raises
    ------
    ExportRefused
        If the exported model differs by more than the tolerance (nothing written).
    FedfleetError
        For a missing model, unusable data, or a bad choice of format.
    """
    check_choice(fmt, quantize)
    source, server_round = model_file(run_dir, record, server_round)
    out = out or default_out(run_dir, fmt, quantize, server_round)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    created = not out.parent.exists()
    try:
        with _quiet():  # TensorFlow's start-up and converter logs; errors still raise
            x, y, data_name = test_data(record, data)
            out.parent.mkdir(parents=True, exist_ok=True)
            return _export(source, server_round, fmt, quantize, out, x, y, data_name)
    except BaseException:
        if created and out.parent.is_dir() and not any(out.parent.iterdir()):
            out.parent.rmdir()  # nothing was written, not even the folder
        raise


def _export(source: Path, server_round: int | None, fmt: str, quantize: str, out: Path,
            x: np.ndarray, y: np.ndarray, data_name: str) -> ExportResult:
    import keras

    model = keras.models.load_model(source, compile=False)
    expected = np.asarray(model(x, training=False))
    work = new_temp_dir(out, ".export")  # the usual permissions, not 700: moved in as is
    try:
        built = work / out.name
        got = _build(model, fmt, quantize, built, x)
        if got.shape != expected.shape:
            raise ExportRefused(f"the exported model answers with shape {got.shape}, the "
                                f"Keras model with {expected.shape}; nothing was written")
        result = ExportResult(
            path=out, format=fmt, quantize=quantize, server_round=server_round,
            bytes=_size(built), max_diff=float(np.max(np.abs(got - expected))),
            keras_accuracy=float(np.mean(expected.argmax(axis=1) == y)),
            exported_accuracy=float(np.mean(got.argmax(axis=1) == y)),
            samples=len(x), data=data_name)
        _check(result)
        _move_into_place(built, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _check(result: ExportResult) -> None:
    label = f"{result.quantize} " if result.quantize != "none" else ""
    what = f"the {label}{result.format} export"
    where = f"on {result.samples} samples of {result.data}; nothing was written"
    if result.quantize == "int8":
        delta = abs(result.exported_accuracy - result.keras_accuracy)
        if delta > INT8_MAX_ACCURACY_DELTA:
            raise ExportRefused(
                f"{what} scores {result.exported_accuracy:.2%} against Keras' "
                f"{result.keras_accuracy:.2%} ({delta * 100:.1f} pp apart, at most "
                f"{INT8_MAX_ACCURACY_DELTA * 100:.0f} allowed) {where}")
        return
    tolerance = TOLERANCES[(result.format, result.quantize)]
    if not result.max_diff <= tolerance:
        raise ExportRefused(f"{what} differs from the Keras model by up to "
                            f"{result.max_diff:.3g} (tolerance {tolerance:g}) {where}")
