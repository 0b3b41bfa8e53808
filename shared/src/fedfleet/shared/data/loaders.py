"""Read a device's dataset: a folder of class subfolders, a CSV, an .npz, or a built-in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedfleet.shared.constants import BUILTIN_PREFIX
from fedfleet.shared.data.builtin import load_builtin
from fedfleet.shared.data.formats import IMAGE_SUFFIXES, as_samples, read_csv_samples, read_npz
from fedfleet.shared.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` (float32, scaled to [0, 1] when they were integer pixels) and labels ``y``."""

    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.y)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Return the shape of one sample."""
        return tuple(int(d) for d in self.x.shape[1:])


def load_dataset(
    path: str,
    split: str = "train",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load the dataset at ``path``.

    Parameters
    ----------
    path
        ``builtin:NAME``, a directory of images in one subfolder per class, a
        ``.csv`` with a label column, or an ``.npz`` with ``x`` and ``y``.
    split
        For built-in datasets: ``train`` (the clients' pool) or ``test`` (held out).
    label_column
        CSV column that holds the labels; every other column is a feature.
    class_names
        Label order for class folders or text labels. Without it, integer names
        are used as they are and other names in sorted order, which is only
        consistent across devices when every device has every class.

    Raises
    ------
    DataError
        With a one-line reason when the data cannot be used.
    """
    if path.startswith(BUILTIN_PREFIX):
        x, y = load_builtin(path[len(BUILTIN_PREFIX) :], split)
        return _finish(x, y, path)
    target = Path(path).expanduser()
    if not target.exists():
        raise DataError(f"data path {path} does not exist: check the path or the mount")
    if target.is_dir():
        x, y = _read_image_dir(target, class_names)
    elif target.suffix.lower() == ".csv":
        x, y = _read_csv(target, label_column, class_names)
    elif target.suffix.lower() == ".npz":
        x, y = _read_npz(target, class_names)
    else:
        raise DataError(
            f"{path}: unsupported data format; use a directory of class subfolders, "
            "a .csv file or an .npz file"
        )
    return _finish(x, y, str(target))


def fit_to_shape(data: Dataset, input_shape: Sequence[int]) -> Dataset:
    """Return ``data`` shaped for a model with ``input_shape``.

    Images are resized and their channels converted; any other mismatch is an error.

    Raises
    ------
    DataError
        If the samples cannot take the model's input shape.
    """
    want = tuple(int(d) for d in input_shape)
    if data.sample_shape == want:
        return data
    if data.x.ndim == 4 and len(want) == 3:
        import tensorflow as tf

        x = data.x
        if x.shape[-1] != want[-1]:
            if x.shape[-1] in (3, 4) and want[-1] == 1:
                x = tf.image.rgb_to_grayscale(x[..., :3]).numpy()
            elif x.shape[-1] == 1 and want[-1] == 3:
                x = np.repeat(x, 3, axis=-1)
            else:
                raise _shape_error(data, want)
        if x.shape[1:3] != want[:2]:
            x = tf.image.resize(x, want[:2]).numpy()
        return Dataset(x.astype(np.float32), data.y, data.source)
    raise _shape_error(data, want)


def _shape_error(data: Dataset, want: tuple[int, ...]) -> DataError:
    return DataError(
        f"{data.source}: samples have shape {data.sample_shape} but the model expects "
        f"{want}; set the run's input-shape to match the data or reshape the data"
    )


def _finish(x: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    """Scale integer pixels to [0, 1], add a channel axis to (N,H,W), check the labels."""
    if len(x) == 0:
        raise DataError(f"{source}: the dataset is empty")
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} samples but {len(y)} labels")
    x = as_samples(x, source)
    if x.ndim == 3:
        x = x[..., None]
    if not np.all(np.isfinite(x)):
        raise DataError(f"{source}: samples contain NaN or infinite values")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{source}: labels must be class indices, got {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, found {int(y.min())}")
    return Dataset(x, y.astype(np.int64), source)


def _label_index(names: Sequence[str], class_names: Sequence[str] | None,
                 source: Path) -> dict[str, int]:
    if class_names:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(
                f"{source}: labels {unknown} are not among class-names {list(class_names)}"
            )
        return {name: class_names.index(name) for name in names}
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: i for i, name in enumerate(sorted(names))}


def _read_image_dir(
    root: Path, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class subfolders; put each class's images in "
                        f"{root}/<class-name>/")
    index = _label_index(classes, class_names, root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for name in classes:
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = tf.io.decode_image(file.read_bytes(), expand_animations=False)
            except (tf.errors.InvalidArgumentError, OSError) as err:
                raise DataError(f"{file}: not a readable image ({type(err).__name__})") \
                    from err
            if images and img.shape != images[0].shape:
                raise DataError(
                    f"{file}: image is {tuple(img.shape)}, earlier images are "
                    f"{images[0].shape}; resize all images to one size"
                )
            images.append(img.numpy())
            labels.append(index[name])
    if not images:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the "
                        "class subfolders")
    return np.stack(images), np.asarray(labels)


def _read_csv(
    path: Path, label_column: str, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    samples = read_csv_samples(path, label_column, labelled=True)
    index = _label_index(sorted(set(samples.labels)), class_names, path)
    labels = np.asarray([index[label] for label in samples.labels])
    return samples.x, labels


def _read_npz(
    path: Path, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_npz(path, (("x", "y"), ("x_train", "y_train")))
    if y.dtype.kind in "US" and len(y):
        index = _label_index(sorted(set(y.tolist())), class_names, path)
        y = np.asarray([index[v] for v in y.tolist()])
    return x, y
