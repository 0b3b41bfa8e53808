"""Loading a device's dataset, splitting it, and the datasets shipped with fedfleet."""

from fedfleet.shared.data.builtin import BUILTIN_DATASETS, load_builtin
from fedfleet.shared.data.loaders import Dataset, fit_to_shape, load_dataset
from fedfleet.shared.data.partition import (
    dirichlet_partition,
    iid_partition,
    partition,
    split_holdout,
)

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "dirichlet_partition",
    "fit_to_shape",
    "iid_partition",
    "load_builtin",
    "load_dataset",
    "partition",
    "split_holdout",
]
