"""Sampling profiles of the server's processes with py-spy, summarised as text.

    prof = Profile.start("superlink", pid, out_dir)   # py-spy record --idle, raw format
    ...
    prof.stop()
    print(summarise(prof.path))

``--idle`` keeps the samples of threads that wait (on a lock, a socket, SQLite), so the
summary shows where the time of a request goes, not only where the CPU goes. One
caveat: an event loop run by uvloop (the SuperLink's) waits inside C, so its idle
samples show as ``Runner.run`` and count as busy here; read the process's CPU from
``/proc`` (as ``scale.py`` does) for how busy it is. The
summary lists the frames of Flower, fedfleet, SQLite/SQLAlchemy, uvicorn/starlette and
TensorFlow with the share of samples they appear in, and the busiest leaf frames.
``pip install py-spy`` (dev/setup.sh installs it into .venv).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

INTERESTING = ("flwr/", "fedfleet/", "sqlalchemy/", "sqlite", "uvicorn/", "starlette/",
               "tensorflow/", "keras/", "matplotlib/", "anyio/")
IDLE = ("select (selectors.py", "Condition.wait", "Queue.get", "_worker (concurrent",
        "sleep", "epoll", "Event.wait", "accept (socket.py")


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """A running ``py-spy record`` of one process."""

    name: str
    path: Path
    proc: subprocess.Popen[bytes] | None

    @classmethod
    def start(cls, name: str, pid: int, out_dir: Path, rate: int = 25) -> Profile:
        """Start recording ``pid`` (all threads, idle ones too) into ``out_dir/NAME.txt``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.txt"
        exe = _py_spy()
        if exe is None:
            return cls(name, path, None)
        proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--idle", "--threads",
                                 "--rate", str(rate), "--format", "raw", "--nonblocking",
                                 "--output", str(path)], stdout=subprocess.DEVNULL,
                                stderr=(out_dir / f"{name}.py-spy.log").open("wb"))
        return cls(name, path, proc)

    def stop(self) -> None:
        """Stop recording (py-spy writes its file on SIGINT)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summarise(path: Path, top: int = 25) -> str:
    """Return the busiest frames of a raw py-spy file, as text lines."""
    if not path.exists():
        return f"{path.name}: no profile (is py-spy installed?)"
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        if any(mark in frames[-1] for mark in IDLE):
            continue
        busy += n
        leaves[frames[-1]] += n
        for frame in set(frames):
            if any(mark in frame for mark in INTERESTING):
                inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.stem}: {total} samples over all threads, {100 * busy / total:.0f}% "
             "not idle (waiting in select/queues/sleep counts as idle)",
             "  busiest frames (share of all samples they appear in, not idle):"]
    lines += [f"    {100 * n / total:5.1f}%  {frame[:140]}"
              for frame, n in inclusive.most_common(top)]
    lines.append("  busiest leaf frames:")
    lines += [f"    {100 * n / total:5.1f}%  {frame[:140]}"
              for frame, n in leaves.most_common(12)]
    return "\n".join(lines)
