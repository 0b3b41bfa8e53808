"""The resource sampler: a leaking child shows growth, a flat one does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sampler import Growth, Sampler, growth, measure_paths, measure_tree, sqlite_files

CHILD = textwrap.dedent("""
    import sys, threading, time
    leak = sys.argv[1] == "leak"
    kept, files, stop = [], [], threading.Event()
    if sys.argv[2] == "fork":  # a grandchild that lives as long as we do
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    for line in sys.stdin:
        if leak:
            kept.append(bytearray(b"\\x01") * (8 << 20))  # 8 MiB, every page touched
            files.append(open(sys.argv[0] if sys.argv[0] != "-c" else sys.executable, "rb"))
            threading.Thread(target=stop.wait, daemon=True).start()
        print("ok", flush=True)
""")


class Child:
    """A Python child that grows (or not) by one step per line it reads."""

    def __init__(self, mode: str, fork: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, "fork" if fork else "alone"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)

    def step(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        import os
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.close()


def test_a_leaking_child_grows_and_a_flat_one_does_not(children: list[Child]) -> None:
    """Memory, threads and open files: growth is seen where it happens, only there."""
    leak, flat = Child("leak"), Child("flat")
    children += [leak, flat]
    sampler = Sampler(interval=60).watch("leak", leak.proc.pid).watch("flat", flat.proc.pid)
    for _ in range(9):
        leak.step()
        flat.step()
        sampler.sample()

    rss = growth(sampler.series("leak", "rss_mib"))
    assert rss.delta > 40 and rss.exceeds(absolute=20, relative=0.1), rss
    assert growth(sampler.series("leak", "threads")).delta >= 5
    assert growth(sampler.series("leak", "fds")).delta >= 5
    for measure, allowed in (("rss_mib", 5.0), ("threads", 0.0), ("fds", 0.0)):
        flat_growth = growth(sampler.series("flat", measure))
        assert not flat_growth.exceeds(absolute=allowed), (measure, flat_growth)
    assert sampler.series("flat", "processes") == [1.0] * 9


def test_a_tree_counts_its_descendants_and_a_dead_root_counts_nothing(
        children: list[Child]) -> None:
    """The grandchild is part of the tree; after the root dies only processes=0 is left."""
    parent = Child("flat", fork=True)
    children.append(parent)
    parent.step()  # the grandchild has been started
    alone = measure_tree(parent.proc.pid)
    assert alone["processes"] == 2 and alone["threads"] >= 2 and alone["rss_mib"] > 1
    assert alone["fds"] >= 3 and alone["cpu_s"] >= 0
    parent.close()
    assert measure_tree(parent.proc.pid) == {"processes": 0.0}


def test_paths_sum_files_folders_and_sqlite_companions(tmp_path: Path) -> None:
    """A folder is walked, a missing file counts 0, a symlink is not followed."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "round-001.keras").write_bytes(b"x" * (1 << 20))
    (tmp_path / "run" / "metrics.json").write_bytes(b"x" * 1024)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (4 << 20))
    (tmp_path / "run" / "link").symlink_to(big)
    db = tmp_path / "state.db"
    db.write_bytes(b"x" * 2048)
    db.with_name("state.db-wal").write_bytes(b"x" * 2048)

    run = measure_paths([tmp_path / "run"])
    assert run["files"] == 3 and run["mib"] < 1.01 and run["mib"] > 1.0
    assert measure_paths(sqlite_files(db)) == {"mib": 4096 / (1 << 20), "files": 2.0}
    assert measure_paths([tmp_path / "nothing"]) == {"mib": 0.0, "files": 0.0}


def test_a_growing_folder_shows_growth_in_the_csv_and_plots(tmp_path: Path) -> None:
    """Rows go to a CSV and one PNG per measure; folder growth is measured."""
    folder = tmp_path / "state"
    folder.mkdir()
    sampler = Sampler(interval=60).watch_path("state", folder)
    sampler.watch("me", __import__("os").getpid())
    for i in range(6):
        (folder / f"f{i}").write_bytes(b"x" * (1 << 20))
        sampler.sample()
    assert growth(sampler.series("state", "mib")) == Growth(1.5, 5.5)
    csv_file = sampler.write_csv(tmp_path / "out" / "samples.csv")
    lines = csv_file.read_text().splitlines()
    assert lines[0] == "t_s,name,measure,value"
    assert len(lines) == 1 + 6 * (2 + 5)
    plots = sampler.plot(tmp_path / "plots")
    assert {p.name for p in plots} == {"mib.png", "files.png", "rss_mib.png",
                                       "threads.png", "fds.png", "cpu_s.png",
                                       "processes.png"}
    assert all(p.stat().st_size > 1000 for p in plots)
    table = {(r["name"], r["measure"]): r for r in sampler.growth_table()}
    assert table[("state", "mib")]["delta"] == 4.0


def test_the_thread_samples_until_stopped(tmp_path: Path) -> None:
    """start/stop: several samples at the interval, one final one, then no more."""
    import time

    sampler = Sampler(interval=0.05).watch_path("tmp", tmp_path).start()
    time.sleep(0.5)
    sampler.stop()
    taken = len(sampler.series("tmp", "files"))
    assert taken >= 4
    time.sleep(0.2)
    assert len(sampler.series("tmp", "files")) == taken
    times = sampler.times("tmp", "files")
    assert times == sorted(times)


def test_growth_needs_three_samples_and_uses_medians() -> None:
    """One spike in a third does not move its median."""
    with pytest.raises(ValueError, match="at least 3"):
        growth([1.0, 2.0])
    g = growth([10, 10, 500, 10, 10, 10, 10, 11, 11])
    assert g == Growth(10.0, 11.0) and not g.exceeds(absolute=2)
    assert g.exceeds(relative=0.05)


def test_a_process_alone_and_a_phase_of_the_run(children: list[Child]) -> None:
    """tree=False leaves the children out; since/until select a phase by the clock."""
    parent = Child("flat", fork=True)
    children.append(parent)
    parent.step()
    sampler = Sampler(interval=60).watch("alone", parent.proc.pid, tree=False)
    sampler.watch("tree", parent.proc.pid)
    sampler.sample()
    mark = sampler.now()
    sampler.sample()
    assert sampler.series("alone", "processes") == [1.0, 1.0]
    assert sampler.series("tree", "processes") == [2.0, 2.0]
    assert len(sampler.series("tree", "rss_mib", since=mark)) == 1
    assert len(sampler.series("tree", "rss_mib", until=mark)) == 1
