"""Plots of a run: real PNGs with drawn content, from any record, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from records import sample_record

from fedfleet.server.results.plots import PLOT_FILES, write_plots


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def _ink(path: Path) -> float:
    """Share of pixels that are not the white background."""
    pixels = _pixels(path)
    return float(np.mean(np.any(pixels < 245, axis=-1)))


def test_every_plot_is_a_png_with_drawn_content(tmp_path: Path) -> None:
    """Five PNGs, each with lines or bars: far more ink than the same plot without data."""
    files = write_plots(tmp_path, sample_record(10))
    assert sorted(p.name for p in files) == sorted(PLOT_FILES.values())
    empty = {p.name: _ink(p) for p in write_plots(tmp_path / "empty", {})}
    for path in files:
        pixels = _pixels(path)
        assert pixels.shape == (400, 700, 3)
        assert pixels.std() > 20, path.name
        assert _ink(path) > empty[path.name] + 0.01, path.name
    colors = {tuple(c) for c in _pixels(tmp_path / "plots" / "accuracy.png")
              .reshape(-1, 3).astype(int)[::7]}
    assert len(colors) > 50  # three coloured lines, a legend, text: not a blank canvas


def test_plots_are_replaced_atomically_and_leave_no_temporary_files(tmp_path: Path) -> None:
    """Each call writes a new file (a new inode via rename) and no *.tmp stays behind."""
    first = write_plots(tmp_path, sample_record(2))
    inodes = {p.name: p.stat().st_ino for p in first}
    second = write_plots(tmp_path, sample_record(6))
    assert all(p.stat().st_ino != inodes[p.name] for p in second)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == \
        sorted(PLOT_FILES.values())


def test_more_rounds_draw_more(tmp_path: Path) -> None:
    """The drawing follows the record: ten rounds of three devices ink more than one."""
    one = write_plots(tmp_path / "one", sample_record(1))
    ten = write_plots(tmp_path / "ten", sample_record(10))
    for a, b in zip(one, ten, strict=True):
        if a.name != "replies.png":
            assert not np.array_equal(_pixels(a), _pixels(b)), a.name


@pytest.mark.parametrize("garbage", [
    {"rounds": "not a list"},
    {"rounds": [None, 3, "x", {"round": "two"}, {"round": True}]},
    {"rounds": [{"round": 1, "central_accuracy": float("nan"), "train_loss": "high",
                 "clients": [{"node_id": "1", "train_time_s": float("inf"),
                              "eval_accuracy": 1e308}, "junk", {"no": "id"}],
                 "errors": ["junk", {"error": None}], "train_failures": -3,
                 "rejected_replies": "many", "timeouts": ["1", "2"]}]},
    {"run": "x", "initial": [1], "status": None},
])
def test_a_broken_or_lying_record_still_plots(tmp_path: Path, garbage: dict[str, Any]
                                              ) -> None:
    """Missing keys, wrong types and values a device made up never stop the plots."""
    files = write_plots(tmp_path, garbage)
    assert len(files) == len(PLOT_FILES) and all(p.stat().st_size > 1000 for p in files)


def test_many_devices_plot_without_a_legend_per_device(tmp_path: Path) -> None:
    """Fifty devices over a hundred rounds still give readable plots."""
    nodes = [str(10**19 + i) for i in range(50)]
    files = write_plots(tmp_path, sample_record(100, nodes))
    assert all(_ink(p) > 0.02 for p in files)
