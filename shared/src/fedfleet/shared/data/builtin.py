"""Datasets that need no network: the digits set shipped in this package, Keras downloads."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from fedfleet.shared.errors import DataError

BUILTIN_DATASETS = ("digits", "mnist", "cifar10")
"""``digits`` ships with fedfleet; ``mnist`` and ``cifar10`` are fetched by Keras."""


def load_builtin(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` of the ``train`` or ``test`` split of a built-in dataset.

    ``digits`` is UCI's handwritten digits (1797 8x8 grayscale images, 10 classes)
    as bundled with scikit-learn, stored here as uint8 with a stratified 80/20 split.

    Raises
    ------
    DataError
        For an unknown name or split, or a Keras download that fails.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    if name == "digits":
        with np.load(str(files("fedfleet.shared.data") / "digits.npz")) as data:
            return data[f"x_{split}"], data[f"y_{split}"]
    if name in ("mnist", "cifar10"):
        import keras

        loader = getattr(keras.datasets, name)
        try:
            train, test = loader.load_data()
        except Exception as err:  # network errors come in many types
            raise DataError(
                f"could not download {name} through keras.datasets ({err}); use "
                "builtin:digits offline, or copy the data to the device as an .npz"
            ) from err
        x, y = train if split == "train" else test
        return np.asarray(x), np.asarray(y)
    known = ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS)
    raise DataError(f"unknown built-in dataset 'builtin:{name}': use one of {known}")
