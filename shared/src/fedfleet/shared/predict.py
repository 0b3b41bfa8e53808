"""Run a ``.tflite`` model on images, CSV rows or an ``.npz``, without TensorFlow.

The model runs in LiteRT (``ai-edge-litert``) and images are decoded with Pillow,
so a device that only predicts installs ``fedfleet-shared[predict]`` and neither
TensorFlow nor Flower. Inputs are prepared the way training prepared them: integer
pixels scaled to [0, 1], images resized to the model's input and converted to its
number of channels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.shared.data.formats import IMAGE_SUFFIXES, as_samples, read_csv_samples, read_npz
from fedfleet.shared.errors import DataError, FedfleetError


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one input."""

    input: str
    label: int
    probability: float
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out: dict[str, Any] = {"input": self.input, "class": self.label,
                               "probability": self.probability}
        if self.name is not None:
            out["class_name"] = self.name
        return out


def _missing(package: str, err: ImportError) -> FedfleetError:
    return FedfleetError(f"fedfleet predict needs {package} ({err}): install "
                         "'fedfleet-shared[predict]' (pip install 'fedfleet-shared[predict]')")


@contextlib.contextmanager
def _native_logs_silenced() -> Iterator[None]:
    """Keep LiteRT's native start-up line ("Created TensorFlow Lite XNNPACK delegate")."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TFLiteModel:
    """A LiteRT interpreter for one ``.tflite`` file, run on batches of float samples."""

    def __init__(self, path: Path) -> None:
        """Load ``path``.

        Raises
        ------
        FedfleetError
            If LiteRT is missing or the file is not a model it can run.
        """
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise _missing("ai-edge-litert", err) from err
        if not path.is_file():
            raise FedfleetError(f"no model file {path}")
        try:
            with _native_logs_silenced():
                self._interpreter = Interpreter(model_path=str(path))
        except (ValueError, RuntimeError) as err:
            raise FedfleetError(f"{path} is not a TFLite model LiteRT can run ({err})") \
                from err
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.path = path

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one sample (without the batch axis)."""
        return tuple(int(d) for d in self._input["shape"][1:])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return the model's outputs (class probabilities) for the samples ``x``."""
        interp = self._interpreter
        interp.resize_tensor_input(self._input["index"], [len(x), *self.input_shape])
        with _native_logs_silenced():
            interp.allocate_tensors()
        details = interp.get_input_details()[0]
        values = np.asarray(x, dtype=np.float32)
        scale, zero = details["quantization"]
        if np.issubdtype(details["dtype"], np.integer) and scale:
            info = np.iinfo(details["dtype"])
            values = np.clip(np.round(values / scale + zero), info.min, info.max)
        interp.set_tensor(details["index"], values.astype(details["dtype"]))
        interp.invoke()
        out = interp.get_output_details()[0]
        result = interp.get_tensor(out["index"]).astype(np.float32)
        scale, zero = out["quantization"]
        if np.issubdtype(out["dtype"], np.integer) and scale:
            result = (result - zero) * scale
        return np.asarray(result, dtype=np.float32)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """Return the outputs of the ``.tflite`` model at ``path`` on ``x``."""
    return TFLiteModel(path)(x)


def _read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise _missing("Pillow", err) from err
    if len(shape) != 3:
        raise DataError(f"{path}: the model takes {shape}-shaped rows, not images; "
                        "give CSV rows or an .npz")
    height, width, channels = shape
    try:
        with Image.open(path) as image:
            mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
            if mode is None:
                raise DataError(f"the model takes {channels}-channel images, which "
                                "fedfleet predict cannot make from image files")
            pixels = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(pixels, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from err
    return as_samples(array.reshape(height, width, channels), path)


def _read_csv(path: Path, shape: tuple[int, ...], label_column: str
              ) -> tuple[np.ndarray, list[str]]:
    samples = read_csv_samples(path, label_column, labelled=False)
    return _fit(samples.x, shape, path), [f"{path.name}:{n}" for n in samples.lines]


def _read_npz(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    (x,) = read_npz(path, (("x",), ("x_test",), ("x_train",)))
    return _fit(as_samples(x, path), shape, path), [f"{path.name}[{i}]" for i in range(len(x))]


def _fit(x: np.ndarray, shape: tuple[int, ...], source: Path) -> np.ndarray:
    if x.shape[1:] == shape:
        return x
    if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
        return x.reshape(len(x), *shape)
    raise DataError(f"{source}: samples have shape {tuple(x.shape[1:])} but the model "
                    f"takes {shape}")


def read_inputs(inputs: Sequence[str], shape: tuple[int, ...],
                label_column: str = "label") -> tuple[np.ndarray, list[str]]:
    """Return the samples in ``inputs`` (image files or folders, .csv, .npz) and names.

    Raises
    ------
    DataError
        With a one-line reason for an input that cannot be read or does not fit.
    """
    batches: list[np.ndarray] = []
    names: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise DataError(f"input {item} does not exist")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        for file in files:
            suffix = file.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                batches.append(_read_image(file, shape)[None])
                names.append(str(file))
            elif suffix == ".csv":
                x, rows = _read_csv(file, shape, label_column)
                batches.append(x)
                names += rows
            elif suffix == ".npz":
                x, rows = _read_npz(file, shape)
                batches.append(x)
                names += rows
            else:
                raise DataError(f"{file}: unsupported input; give images "
                                f"({', '.join(IMAGE_SUFFIXES)}), a .csv or an .npz")
    if not batches:
        raise DataError("no inputs to predict")
    return np.concatenate(batches).astype(np.float32), names


def predict(model: Path, inputs: Sequence[str], class_names: Sequence[str] = (),
            label_column: str = "label") -> list[Prediction]:
    """Return the most likely class and its probability for every sample in ``inputs``."""
    runner = TFLiteModel(model)
    x, names = read_inputs(inputs, runner.input_shape, label_column)
    probs = runner(x)
    out = []
    for name, row in zip(names, probs, strict=True):
        label = int(np.argmax(row))
        out.append(Prediction(name, label, float(row[label]),
                              class_names[label] if label < len(class_names) else None))
    return out
