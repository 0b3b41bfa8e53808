"""A short soak: a real server and three real devices for eight rounds, sampled.

The server's memory, threads and open files must not grow between the first and the
last third of the rounds beyond the bounds below, and ``--keep-checkpoints 2`` must
leave at most the newest two rounds plus the best one. Plain HTTP (``--insecure``):
what is measured here does not depend on TLS, and the run stays under ~3 minutes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from fleet_helpers import Fleet
from ports import free_port

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from sampler import Sampler, find_in_tree, growth

pytestmark = pytest.mark.integration

ROUNDS = 8
KEEP = 2
RSS_BOUNDS = {"superlink": (10.0, 0.05), "serverapp": (40.0, 0.05)}
"""Growth allowed (MiB + share of the first third's median), sampled from the end of
round 1 (TensorFlow's graphs, the app install, SQLite's cache are paid by then) to the
end of round 8. Measured on 2 vCPUs (2026-12-04): SuperLink +0.6 MiB (of 150), ServerApp
+22 MiB (of 652; about 3 MiB a round, see the soak notes in benchmarks/README.md). The
model is only 85 kB, so these bounds catch leaks of megabytes per round (a Keras model
or a figure kept per round, a buffer per ClientApp message), not of one model copy."""
THREADS_BOUND = 2.0
FDS_BOUND = 4.0


def _rounds(out: Path) -> list[dict[str, object]]:
    found = list(out.glob("run-*/metrics.json"))
    try:
        return list(json.loads(found[0].read_text())["rounds"]) if found else []
    except (json.JSONDecodeError, KeyError):
        return []  # written atomically, but a fresh file may be mid-replace on some fs


def test_eight_rounds_do_not_grow_the_server_and_keep_few_checkpoints(
        fleet: Fleet, tmp_path: Path) -> None:
    """Memory, threads, fds of SuperLink and ServerApp flat; checkpoints bounded."""
    port = free_port()
    server = fleet.start(
        "server", "server", "--insecure", "--port", str(port), "--rounds", str(ROUNDS),
        "--min-clients", "3", "--local-epochs", "1", "--exit-when-done",
        "--state-dir", "state", "--output-dir", "out", "--client-wait-timeout", "240",
        "--keep-checkpoints", str(KEEP))
    for i in range(3):
        fleet.start(f"client{i}", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                    "--partition", f"{i}/3", "--runtime-port", str(free_port()),
                    "--home", f"client{i}", "--connect-timeout", "60")
    sampler = Sampler(0.5)
    deadline = time.monotonic() + 240
    while len(_rounds(tmp_path / "out")) < 1:  # round 1 warms everything up
        assert server.poll() is None and time.monotonic() < deadline, fleet.log("server")
        time.sleep(0.5)
    superlink = find_in_tree(server.pid, "flower-superlink")
    serverapp = find_in_tree(server.pid, "flwr-serverapp")
    assert superlink is not None and serverapp is not None
    sampler.watch("superlink", superlink, tree=False).watch("serverapp", serverapp)
    sampler.start()
    try:
        while len(_rounds(tmp_path / "out")) < ROUNDS:
            assert server.poll() is None and time.monotonic() < deadline, \
                fleet.log("server")[-3000:]
            time.sleep(0.5)
    finally:
        sampler.stop()
    assert server.wait(timeout=120) == 0, fleet.log("server")[-3000:]

    for name in ("superlink", "serverapp"):
        rss = growth(sampler.series(name, "rss_mib"))
        threads = growth(sampler.series(name, "threads"))
        fds = growth(sampler.series(name, "fds"))
        print(f"{name}: rss {rss}, threads {threads}, fds {fds}")  # shown with -s
        assert len(sampler.series(name, "rss_mib")) >= 30, "too few samples to judge"
        assert not rss.exceeds(*RSS_BOUNDS[name]), (name, "rss", rss)
        assert not threads.exceeds(THREADS_BOUND), (name, "threads", threads)
        assert not fds.exceeds(FDS_BOUND), (name, "fds", fds)

    (run_dir,) = (tmp_path / "out").glob("run-*")
    rows = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
    kept = sorted(int(p.name[6:9]) for p in (run_dir / "checkpoints").glob("*.keras"))
    states = sorted(int(p.name[6:9]) for p in (run_dir / "checkpoints").glob("*.state.npz"))
    best = max(rows, key=lambda r: r["central_accuracy"])["round"]
    assert kept == states and len(kept) <= KEEP + 1, kept
    assert kept[-KEEP:] == [ROUNDS - 1, ROUNDS] and best in kept, (kept, best)
    entries = json.loads((run_dir / "models.json").read_text())["models"]
    removed = sorted(e["round"] for e in entries if e.get("removed"))
    assert removed == sorted(set(range(1, ROUNDS + 1)) - set(kept))
    assert any(e.get("final") for e in entries)
