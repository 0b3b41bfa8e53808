"""CPU and memory of the server's processes by role, read from /proc (Linux).

The server side is several processes: ``fedfleet server`` (the follower), the
SuperLink, the SuperExec, the ServerApp of the run, and the gateway's nginx (a
container: its processes are this machine's processes too). :func:`roles` finds them
under a root PID by their command line, so each gets its own figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sampler import cmdline, process_table, tree_pids

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

ROLES = (("flwr-serverapp", "serverapp"), ("flower-superexec", "superexec"),
         ("flower-superlink", "superlink"), ("nginx", "gateway"),
         ("fedfleet-gateway", "gateway"), ("swarm.runner", "swarm"))


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Return every descendant of ``pid``."""
    return [p for p in tree_pids(pid, process_table()) if p != pid]


def roles(root: int) -> dict[str, list[int]]:
    """Return ``root`` and its descendants grouped by role (see :data:`ROLES`)."""
    grouped: dict[str, list[int]] = {}
    for pid in tree_pids(root, process_table()) or [root]:
        line = cmdline(pid)
        role = next((name for marker, name in ROLES if marker in line), "other")
        grouped.setdefault(role, []).append(pid)
    return grouped


@dataclass(frozen=True)
class Usage:
    """CPU seconds so far, resident memory now, threads and open files now."""

    cpu_s: float
    rss_mb: float
    threads: int
    fds: int


def usage(pids: Iterable[int]) -> Usage:
    """Return the summed usage of ``pids`` (processes that are gone count 0)."""
    cpu = rss = 0.0
    threads = fds = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / TICK
        threads += int(fields[17])
        rss += int(fields[21]) * PAGE / 2**20
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return Usage(cpu, rss, threads, fds)
