"""Loading, shaping and partitioning of device datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfleet.shared.data import (
    dirichlet_partition,
    fit_to_shape,
    iid_partition,
    load_builtin,
    load_dataset,
    partition,
    split_holdout,
)
from fedfleet.shared.errors import ConfigError, DataError
from fedfleet.shared.predict import read_inputs


def _write_png(path: Path, pixels: np.ndarray) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def test_builtin_digits_is_real_labelled_data() -> None:
    """The shipped digits set has both splits, 10 balanced classes and varied pixels."""
    x_tr, y_tr = load_builtin("digits", "train")
    x_te, y_te = load_builtin("digits", "test")
    assert x_tr.shape == (1437, 8, 8) and x_te.shape == (360, 8, 8)
    assert set(np.unique(y_tr)) == set(range(10))
    assert np.bincount(y_te).min() >= 30
    assert x_tr.std() > 50  # images, not a constant


def test_load_builtin_scales_and_adds_channel() -> None:
    """Integer pixels become float32 in [0, 1] with a channel axis."""
    data = load_dataset("builtin:digits", split="test")
    assert data.x.dtype == np.float32 and data.sample_shape == (8, 8, 1)
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert data.y.dtype == np.int64


def test_unknown_builtin_names_the_choices() -> None:
    """An unknown built-in lists the ones that exist."""
    with pytest.raises(DataError, match="builtin:digits"):
        load_dataset("builtin:nope")


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    """Subfolder names become labels; integer names keep their value."""
    rng = np.random.default_rng(0)
    for label in ("0", "1", "2"):
        for i in range(3):
            _write_png(tmp_path / label / f"{i}.png",
                       rng.integers(0, 255, (6, 6, 1), dtype=np.uint8))
    (tmp_path / "1" / "notes.txt").write_text("ignored")
    data = load_dataset(str(tmp_path))
    assert len(data) == 9 and data.sample_shape == (6, 6, 1)
    assert sorted(np.bincount(data.y).tolist()) == [3, 3, 3]


def test_image_folder_named_classes_follow_class_names(tmp_path: Path) -> None:
    """Text class names map by the given order, so devices agree on labels."""
    for name in ("dog", "cat"):
        _write_png(tmp_path / name / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    data = load_dataset(str(tmp_path), class_names=["dog", "cat"])
    assert dict(zip(["cat", "dog"], data.y.tolist(), strict=True)) == {"cat": 1, "dog": 0}


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    """A broken image is reported with its path."""
    _write_png(tmp_path / "0" / "good.png", np.zeros((4, 4, 1), dtype=np.uint8))
    (tmp_path / "0" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png"):
        load_dataset(str(tmp_path))


def test_images_of_different_sizes_are_refused(tmp_path: Path) -> None:
    """Mixed image sizes get a clear message."""
    _write_png(tmp_path / "0" / "a.png", np.zeros((4, 4, 1), dtype=np.uint8))
    _write_png(tmp_path / "0" / "b.png", np.zeros((5, 5, 1), dtype=np.uint8))
    with pytest.raises(DataError, match="resize"):
        load_dataset(str(tmp_path))


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    """No class folders, or no path at all, are clear errors."""
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"))


def test_csv_with_label_column(tmp_path: Path) -> None:
    """Every column but the label is a feature."""
    path = tmp_path / "d.csv"
    path.write_text("a,label,b\n1,0,2\n3,1,4\n5,1,6\n")
    data = load_dataset(str(path))
    np.testing.assert_almost_equal(data.x, [[1, 2], [3, 4], [5, 6]])
    assert data.y.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", "no label column 'label'"),
        ("a,label\n1,\n", "missing label"),
        ("a,label\nx,1\n", "non-numeric feature"),
        ("a,label\n", "no data rows"),
        ("a,label\n1,0,3\n", "3 fields"),
    ],
)
def test_bad_csv_says_where(tmp_path: Path, text: str, message: str) -> None:
    """Each CSV defect gets its own message."""
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_npz_x_y_and_missing_keys(tmp_path: Path) -> None:
    """An .npz needs x and y; anything else names what it found."""
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((4, 3), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    assert load_dataset(str(good)).sample_shape == (3,)
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.ones((2, 2)))
    with pytest.raises(DataError, match="found \\['features'\\]"):
        load_dataset(str(bad))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(junk))


def test_labels_must_be_class_indices(tmp_path: Path) -> None:
    """Negative or fractional labels are refused; NaN samples too."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="class indices"):
        load_dataset(str(path))
    np.savez(path, x=np.array([[np.nan, 1.0]]), y=np.array([0]))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(path))


def test_unsupported_format(tmp_path: Path) -> None:
    """An unknown file type lists what is supported."""
    path = tmp_path / "d.parquet"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported data format"):
        load_dataset(str(path))


def test_fit_to_shape_resizes_images_and_refuses_tables() -> None:
    """Images resize and change channels; other mismatches are errors."""
    data = load_dataset("builtin:digits", split="test")
    fitted = fit_to_shape(data, (16, 16, 3))
    assert fitted.sample_shape == (16, 16, 3)
    assert fit_to_shape(data, (8, 8, 1)) is data
    with pytest.raises(DataError, match="model expects \\(20,\\)"):
        fit_to_shape(data, (20,))


def test_iid_partitions_cover_every_sample_once() -> None:
    """IID parts are disjoint, complete and near-equal."""
    parts = iid_partition(100, 3, seed=1)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(100))
    assert {len(p) for p in parts} <= {33, 34}


def test_dirichlet_partitions_are_disjoint_skewed_and_deterministic() -> None:
    """Dirichlet parts cover all samples once and skew label mixes."""
    _, y = load_builtin("digits", "train")
    parts = dirichlet_partition(y, 3, alpha=0.3, seed=42)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    shares = np.array([np.bincount(y[p], minlength=10) / len(p) for p in parts])
    assert shares.max() > 0.2  # IID would give every class about 0.1
    again = dirichlet_partition(y, 3, alpha=0.3, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_partition_checks_its_arguments() -> None:
    """Bad ids, counts or methods name the setting."""
    y = np.zeros(50, dtype=int)
    with pytest.raises(ConfigError, match="0-based"):
        partition(y, 3, 3)
    with pytest.raises(ConfigError, match="unknown partitioning"):
        partition(y, 0, 2, method="sorted")
    with pytest.raises(ConfigError, match="dirichlet-alpha"):
        partition(y, 0, 2, method="dirichlet", alpha=0)


def test_split_holdout_keeps_both_sides() -> None:
    """The hold-out takes its share and leaves training data."""
    x, y = np.arange(10).reshape(10, 1), np.arange(10)
    x_tr, y_tr, x_ev, y_ev = split_holdout(x, y, 0.2, seed=0)
    assert len(x_ev) == 2 and len(x_tr) == 8
    assert sorted(np.concatenate([y_tr, y_ev]).tolist()) == list(range(10))
    with pytest.raises(DataError, match="empty"):
        split_holdout(x[:0], y[:0], 0.2, seed=0)


@pytest.mark.parametrize("text", ["a,label\n1,0,3\n", "a,label\nx,1\n", "a,label\n"])
def test_predict_reads_csv_with_the_same_parser(tmp_path: Path, text: str) -> None:
    """A CSV defect reads the same in training data and in ``fedfleet predict``'s inputs."""
    # Prepare
    path = tmp_path / "d.csv"
    path.write_text(text)
    # Execute
    with pytest.raises(DataError) as training:
        load_dataset(str(path))
    with pytest.raises(DataError) as predicting:
        read_inputs([str(path)], (1,))
    # Assert
    assert str(training.value) == str(predicting.value)


def test_csv_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    """The line named is the file's line, blank lines included."""
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,0\n\nx,1\n")
    with pytest.raises(DataError, match=r"d.csv:4: non-numeric"):
        load_dataset(str(path))
