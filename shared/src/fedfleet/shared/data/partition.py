"""Deterministic IID and label-skewed (Dirichlet) partitions, and local hold-out splits."""

from __future__ import annotations

import numpy as np

from fedfleet.shared.errors import ConfigError, DataError

PARTITIONINGS = ("iid", "dirichlet")


def iid_partition(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Shuffle indices with ``seed`` and cut them into near-equal parts."""
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(
    labels: np.ndarray,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Split indices so that each class is shared out by proportions drawn from Dir(alpha).

    Small ``alpha`` gives each partition few classes (strongly non-IID); large
    ``alpha`` approaches IID. Draws are repeated (with the same seeded generator)
    until every partition has at least ``min_size`` samples.

    Raises
    ------
    ConfigError
        If ``alpha`` is not positive or no draw gives every partition ``min_size``.
    """
    if alpha <= 0:
        raise ConfigError(f"dirichlet-alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet([alpha] * num_partitions)
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"no Dirichlet(alpha={alpha}) split of {len(labels)} samples gives all "
        f"{num_partitions} partitions {min_size} samples; raise dirichlet-alpha or "
        "use fewer partitions"
    )


def partition(
    labels: np.ndarray,
    partition_id: int,
    num_partitions: int,
    method: str = "iid",
    alpha: float = 0.5,
    seed: int = 42,
) -> np.ndarray:
    """Return the sample indices of partition ``partition_id`` (0-based).

    Every client computes the same split from the same seed, so partitions are
    disjoint without any coordination.
    """
    if num_partitions < 1:
        raise ConfigError(f"num-partitions must be at least 1, got {num_partitions}")
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(
            f"partition-id {partition_id} is outside 0..{num_partitions - 1}; "
            "partition ids are 0-based"
        )
    if method == "iid":
        return iid_partition(len(labels), num_partitions, seed)[partition_id]
    if method == "dirichlet":
        return dirichlet_partition(labels, num_partitions, alpha, seed)[partition_id]
    raise ConfigError(f"unknown partitioning {method!r}: use one of {PARTITIONINGS}")


def split_holdout(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of the samples for local evaluation.

    Returns ``x_train, y_train, x_eval, y_eval``. At least one sample stays on
    each side when there are two or more.

    Raises
    ------
    DataError
        If there are no samples.
    """
    n = len(x)
    if n == 0:
        raise DataError("the dataset is empty: there is nothing to train on")
    n_eval = min(max(int(round(n * fraction)), 1 if n > 1 else 0), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    ev, tr = order[:n_eval], order[n_eval:]
    return x[tr], y[tr], x[ev], y[ev]
