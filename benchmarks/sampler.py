"""Sample process trees and paths over time: memory, threads, open files, CPU, sizes.

A soak benchmark asks "does anything grow?". This module answers with numbers:

    sampler = Sampler(interval=2.0)
    sampler.watch("superlink", superlink_pid)      # the PID and all its descendants
    sampler.watch("device-3", join_pid)
    sampler.watch_path("state", state_dir)         # a folder: total size, file count
    sampler.watch_path("superlink-db", *sqlite_files(state_dir / "state.db"))
    sampler.start()
    ...                                            # the run
    sampler.stop()
    sampler.write_csv(out / "samples.csv")
    sampler.plot(out)                              # one PNG per measure
    first, last = growth(sampler.series("superlink", "rss_mib"))

It reads ``/proc`` only (Linux; no psutil needed): one pass over ``/proc/*/stat`` per
sample finds every watched tree's processes, so a few hundred trees cost one scan.

Measures of a tree (``TREE_MEASURES``): ``rss_mib`` (resident memory summed over its
processes), ``threads``, ``fds`` (open file descriptors), ``cpu_s`` (user + system
CPU seconds of its live processes, including the children they reaped, such as each
finished ClientApp) and ``processes``. A tree whose root is gone has only
``processes`` = 0. Measures of a path (``PATH_MEASURES``): ``mib`` (files summed,
folders walked without following symlinks, missing paths count 0) and ``files``.
"""

from __future__ import annotations

import csv
import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

TREE_MEASURES = ("rss_mib", "threads", "fds", "cpu_s", "processes")
PATH_MEASURES = ("mib", "files")
MIB = 1024.0 * 1024.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = float(os.sysconf("SC_CLK_TCK"))


class Row(NamedTuple):
    """One measured value: seconds since :meth:`Sampler.start`, what, which measure."""

    t: float
    name: str
    measure: str
    value: float


class Growth(NamedTuple):
    """Medians of a series' first and last thirds (see :func:`growth`)."""

    first: float
    last: float

    @property
    def delta(self) -> float:
        """Return how much the last third's median exceeds the first third's."""
        return self.last - self.first

    def exceeds(self, absolute: float = 0.0, relative: float = 0.0) -> bool:
        """Return whether the series grew by more than ``absolute`` + ``relative`` x first.

        Parameters
        ----------
        absolute
            Growth allowed in the series' unit (e.g. MiB, threads).
        relative
            Growth allowed as a share of the first third's median (0.1: 10 %).

        Returns
        -------
        bool
            True if ``last - first`` is larger than the allowance.
        """
        return self.delta > absolute + relative * abs(self.first)


def growth(series: Sequence[float]) -> Growth:
    """Return the medians of the first and the last third of ``series``.

    Medians, not means or ends, so one busy sample (a round's training peak) does not
    decide; compare them with :meth:`Growth.exceeds`.

    Raises
    ------
    ValueError
        With fewer than 3 values (no thirds to compare).
    """
    if len(series) < 3:
        raise ValueError(f"growth needs at least 3 samples, got {len(series)}")
    third = len(series) // 3
    return Growth(float(statistics.median(series[:third])),
                  float(statistics.median(series[-third:])))


def sqlite_files(database: Path) -> tuple[Path, Path, Path]:
    """Return a SQLite database file and its ``-wal`` and ``-shm`` companions."""
    return (database, database.with_name(database.name + "-wal"),
            database.with_name(database.name + "-shm"))


@dataclass(frozen=True)
class _Proc:
    ppid: int
    threads: int
    rss_pages: int
    cpu_ticks: int


def _read_stat(pid: int) -> _Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces
    # fields[0] is field 3 (state): ppid=4, utime..cstime=14..17, threads=20, rss=24
    ticks = sum(int(f) for f in fields[11:15])
    return _Proc(int(fields[1]), int(fields[17]), int(fields[21]), ticks)


def process_table() -> dict[int, _Proc]:
    """Return every process the caller can see, by PID (one scan of ``/proc``)."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (proc := _read_stat(int(entry.name))) is not None:
            table[int(entry.name)] = proc
    return table


def tree_pids(root: int, table: dict[int, _Proc]) -> list[int]:
    """Return ``root`` (if alive) and all its descendants found in ``table``."""
    if root not in table:
        return []
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cmdline(pid: int) -> str:
    """Return the command line of ``pid`` ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def find_in_tree(root: int, marker: str) -> int | None:
    """Return the first process of ``root``'s tree whose command line holds ``marker``.

    For the parts of a daemon tree: ``find_in_tree(server_pid, "flower-superlink")``.
    """
    for pid in tree_pids(root, process_table()):
        if marker in cmdline(pid):
            return pid
    return None


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def measure_tree(root: int, table: dict[int, _Proc] | None = None, tree: bool = True
                 ) -> dict[str, float]:
    """Return the ``TREE_MEASURES`` of ``root``'s tree now (only ``processes`` if gone).

    With ``tree=False`` only ``root`` itself is measured (e.g. the SuperLink without
    the ServerApp below it).
    """
    table = process_table() if table is None else table
    pids = tree_pids(root, table) if tree else [root] if root in table else []
    if not pids:
        return {"processes": 0.0}
    procs = [table[p] for p in pids]
    return {"rss_mib": sum(p.rss_pages for p in procs) * _PAGE / MIB,
            "threads": float(sum(p.threads for p in procs)),
            "fds": float(sum(_fd_count(p) for p in pids)),
            "cpu_s": sum(p.cpu_ticks for p in procs) / _TICK,
            "processes": float(len(pids))}


def measure_paths(paths: Iterable[Path]) -> dict[str, float]:
    """Return the ``PATH_MEASURES`` of ``paths`` together (missing ones count 0)."""
    size, files = 0, 0
    for path in paths:
        try:
            if path.is_symlink() or path.is_file():
                size += path.lstat().st_size
                files += 1
                continue
            for folder, _dirs, names in os.walk(path):
                for name in names:
                    try:
                        size += os.lstat(os.path.join(folder, name)).st_size
                        files += 1
                    except OSError:
                        continue  # removed while we walked
        except OSError:
            continue
    return {"mib": size / MIB, "files": float(files)}


class Sampler:
    """Samples named process trees and paths every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 1.0) -> None:
        """Sample every ``interval`` seconds once started."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.rows: list[Row] = []
        self._trees: dict[str, tuple[int, bool]] = {}
        self._paths: dict[str, tuple[Path, ...]] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def watch(self, name: str, pid: int, tree: bool = True) -> Sampler:
        """Sample the tree of ``pid`` (it and its descendants) as ``name``.

        May be called while running, and again with a new PID (a restarted device);
        ``tree=False`` samples the process alone.
        """
        with self._lock:
            self._trees[name] = (pid, tree)
        return self

    def watch_path(self, name: str, *paths: Path) -> Sampler:
        """Sample the total size and file count of ``paths`` (files or folders) as ``name``."""
        if not paths:
            raise ValueError("watch_path needs at least one path")
        with self._lock:
            self._paths[name] = tuple(Path(p) for p in paths)
        return self

    def sample(self) -> list[Row]:
        """Take one sample of everything watched now, keep it and return its rows."""
        with self._lock:
            trees, paths = dict(self._trees), dict(self._paths)
        t = time.monotonic() - self._t0
        table = process_table() if trees else {}
        rows = [Row(t, name, measure, value)
                for name, (pid, tree) in trees.items()
                for measure, value in measure_tree(pid, table, tree).items()]
        rows += [Row(t, name, measure, value)
                 for name, group in paths.items()
                 for measure, value in measure_paths(group).items()]
        with self._lock:
            self.rows.extend(rows)
        return rows

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._halt.wait(self.interval):
                return

    def start(self) -> Sampler:
        """Start sampling in a daemon thread (the clock starts now)."""
        if self._thread is not None:
            raise RuntimeError("the sampler is already started")
        self._t0 = time.monotonic()
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (after one last sample) and wait for the thread."""
        if self._thread is None:
            return
        self._halt.set()
        self._thread.join()
        self._thread = None
        self.sample()

    def names(self) -> list[str]:
        """Return the names sampled so far, in the order first seen."""
        return list(dict.fromkeys(r.name for r in self.rows))

    def now(self) -> float:
        """Return the sampler's clock (seconds since :meth:`start`), to mark phases."""
        return time.monotonic() - self._t0

    def _select(self, name: str, measure: str, since: float | None, until: float | None
                ) -> list[Row]:
        return [r for r in self.rows if r.name == name and r.measure == measure
                and (since is None or r.t >= since) and (until is None or r.t <= until)]

    def series(self, name: str, measure: str, since: float | None = None,
               until: float | None = None) -> list[float]:
        """Return the values of ``measure`` for ``name``, oldest first.

        ``since`` and ``until`` (the sampler's clock, :meth:`now`) limit it to a phase.
        """
        return [r.value for r in self._select(name, measure, since, until)]

    def times(self, name: str, measure: str, since: float | None = None,
              until: float | None = None) -> list[float]:
        """Return the sample times (s since start) of :meth:`series`."""
        return [r.t for r in self._select(name, measure, since, until)]

    def peak(self, name: str, measure: str, since: float | None = None,
             until: float | None = None) -> float | None:
        """Return the highest value of ``measure`` for ``name`` (None if never sampled)."""
        values = self.series(name, measure, since, until)
        return max(values) if values else None

    def write_csv(self, path: Path) -> Path:
        """Write every row as ``t_s,name,measure,value`` and return ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["t_s", "name", "measure", "value"])
            for row in self.rows:
                writer.writerow([f"{row.t:.3f}", row.name, row.measure, f"{row.value:.6g}"])
        return path

    def plot(self, directory: Path, names: Sequence[str] | None = None) -> list[Path]:
        """Draw each measure over time (one line per name) as ``DIRECTORY/MEASURE.png``.

        Parameters
        ----------
        directory
            Where the PNG files go (created if missing).
        names
            The names to draw (default: all); more than 12 are drawn without a legend.

        Returns
        -------
        list of Path
            The files written.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        directory.mkdir(parents=True, exist_ok=True)
        chosen = list(names) if names is not None else self.names()
        written = []
        for measure in dict.fromkeys(r.measure for r in self.rows):
            drawn = [n for n in chosen if self.series(n, measure)]
            if not drawn:
                continue
            fig, ax = plt.subplots(figsize=(9, 4.5))
            for name in drawn:
                ax.plot(self.times(name, measure), self.series(name, measure),
                        label=name, linewidth=1.0 if len(drawn) > 12 else 1.6)
            ax.set_xlabel("seconds")
            ax.set_ylabel(measure)
            ax.set_title(measure)
            ax.grid(alpha=0.3)
            if len(drawn) <= 12:
                ax.legend(fontsize="small")
            fig.tight_layout()
            target = directory / f"{measure}.png"
            fig.savefig(target, dpi=90)
            plt.close(fig)
            written.append(target)
        return written

    def growth_table(self, measures: Sequence[str] = ("rss_mib", "threads", "fds", "mib"),
                     since: float | None = None, until: float | None = None
                     ) -> list[dict[str, object]]:
        """Return first-third and last-third medians of each name's ``measures``."""
        out: list[dict[str, object]] = []
        for name in self.names():
            for measure in measures:
                values = self.series(name, measure, since, until)
                if len(values) >= 3:
                    g = growth(values)
                    out.append({"name": name, "measure": measure, "first": g.first,
                                "last": g.last, "delta": g.delta})
        return out
