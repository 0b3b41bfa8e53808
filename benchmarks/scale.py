"""How many devices one fedfleet server holds: a swarm through the real front door.

    .venv/bin/python benchmarks/scale.py                       # 100, 300, 1000 devices
    .venv/bin/python benchmarks/scale.py --sizes 50 --rounds 3 # a quick look
    .venv/bin/python benchmarks/scale.py --sizes 1000 --server-env KEY=VALUE ...  # a lever

For each size N: a fresh ``fedfleet server`` (TLS, node auth, N keys in
``--authorized-keys``) behind the fedfleet gateway (nginx, its own container on the
host network), both pinned to CPU 0; N virtual devices (``benchmarks/swarm``: Flower's
Fleet API with each device's own node key, TLS, signed requests; no TensorFlow)
pinned to CPU 1, from many loopback source addresses. It measures enrolment, the time
until all N are online, an idle window (nothing to do: only polls and heartbeats), then
a run with 10 % (at least 10) of the devices sampled per round, and reports per role
(SuperLink, ServerApp, gateway, the swarm itself) CPU and memory, the poll latency the
devices saw, requests per second at the gateway, round times and the SuperLink
database size. ``--churn`` makes a share of devices vanish in their first train round
and come back with the same key; ``--slow`` makes a share of devices slow.

Writes ``--json`` (every number) and prints markdown tables. Every loop is bounded in
time; the swarm and the server stop by themselves and everything is cleaned up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from sampler import Sampler, growth, sqlite_files
from swarm import procs
from swarm.device import Pace
from swarm.launch import Swarm, SwarmResult, make_keys
from swarm.profile import Profile, summarise
from swarm.stack import Stack, StackOptions

ROLES = ("superlink", "serverapp", "gateway")


@dataclass
class Window:
    """CPU, memory, threads and open files of each role over a stretch of time."""

    started: float = 0.0
    ended: float = 0.0
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_end: dict[str, float] = field(default_factory=dict)
    rss_max: dict[str, float] = field(default_factory=dict)
    threads_max: dict[str, int] = field(default_factory=dict)
    fds_max: dict[str, int] = field(default_factory=dict)

    def cores(self, role: str) -> float | None:
        """Return the role's average CPU use in cores over the window."""
        if role not in self.cpu_end or self.ended <= self.started:
            return None
        return (self.cpu_end[role] - self.cpu_start.get(role, 0.0)) / (
            self.ended - self.started)


class Watcher:
    """Samples the server's roles every second into the current :class:`Window`."""

    def __init__(self, stack: Stack) -> None:
        """Watch ``stack``'s processes."""
        self.stack = stack
        self.window = Window()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()

    def _pids(self) -> dict[str, list[int]]:
        pids = self.stack.server_roles()
        pids["gateway"] = self.stack.gateway_pids()
        return pids

    def _sample(self) -> dict[str, procs.Usage]:
        return {role: procs.usage(pids) for role, pids in self._pids().items()}

    def begin(self) -> None:
        """Start a new window now."""
        sample = self._sample()
        with self._lock:
            self.window = Window(started=time.monotonic(),
                                 cpu_start={r: u.cpu_s for r, u in sample.items()})
        if not self._thread.is_alive():
            self._thread.start()

    def end(self) -> Window:
        """Close the current window and return it."""
        self._take()
        with self._lock:
            self.window.ended = time.monotonic()
            return self.window

    def _take(self) -> None:
        sample = self._sample()
        with self._lock:
            w = self.window
            for role, use in sample.items():
                w.cpu_end[role] = use.cpu_s
                w.cpu_start.setdefault(role, use.cpu_s)  # a process born in the window
                w.rss_max[role] = max(w.rss_max.get(role, 0.0), use.rss_mb)
                w.threads_max[role] = max(w.threads_max.get(role, 0), use.threads)
                w.fds_max[role] = max(w.fds_max.get(role, 0), use.fds)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._take()
            except Exception:  # a process ending mid-sample
                continue

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()


def _wait_online(stack: Stack, count: int, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        online = sum(1 for n in stack.nodes() if n.get("status") == "online")
        if online >= count:
            return time.monotonic() - started
        time.sleep(3.0)
    return None


def _profile(stack: Stack, args: argparse.Namespace, n: int, phase: str) -> list[Profile]:
    """Start py-spy on the SuperLink (and on the ServerApp once it runs) if asked."""
    if not args.profile:
        return []
    out = Path(args.profile)
    started = [Profile.start(f"{n}-{phase}-superlink", pid, out)
               for pid in stack.server_roles().get("superlink", [])[:1]]
    if phase == "run":
        holder: list[Profile] = []

        def serverapp() -> None:
            for _ in range(120):
                pids = stack.server_roles().get("serverapp", [])
                if pids:
                    holder.append(Profile.start(f"{n}-run-serverapp", pids[0], out))
                    return
                time.sleep(0.5)

        thread = threading.Thread(target=serverapp, daemon=True)
        thread.start()

        class Later(Profile):
            def stop(self) -> None:
                thread.join(timeout=1)
                for prof in holder:
                    prof.stop()

        started.append(Later("serverapp", out / "none", None))
    return started


SOAK_BOUNDS = {"rss_mib": (50.0, 0.10), "threads": (4.0, 0.0), "fds": (16.0, 0.0)}
"""Growth allowed between the first and last third of a soak (absolute, relative),
as in ``real_devices.py``; the SuperLink's file count follows its kept-alive
connections, so it gets the same margin as in ``tests/docker/test_swarm.py``."""


class Soak:
    """Samples every role, the swarm and the server's folders through a long run."""

    def __init__(self, stack: Stack, swarm: Swarm, interval: float) -> None:
        """Watch ``stack`` and ``swarm`` every ``interval`` seconds once started."""
        self.stack = stack
        self.sampler = Sampler(interval)
        roles = stack.server_roles()
        for pid in roles.get("superlink", [])[:1]:
            self.sampler.watch("superlink", pid, tree=False)
        for i, pid in enumerate(swarm.pids()):
            self.sampler.watch(f"swarm-{i}", pid, tree=False)
        gateway = stack.gateway_pids()
        if gateway:
            self.sampler.watch("gateway", gateway[0])
        self.sampler.watch_path("state-dir", stack.state_dir)
        self.sampler.watch_path("superlink-db", *sqlite_files(stack.state_dir / "superlink.db"))
        self.sampler.watch_path("runs-dir", stack.output_dir)
        self._halt = threading.Event()
        self._finder = threading.Thread(target=self._find_serverapp, daemon=True)

    def _find_serverapp(self) -> None:
        while not self._halt.wait(1.0):
            pids = self.stack.server_roles().get("serverapp", [])
            if pids:
                self.sampler.watch("serverapp", pids[0], tree=False)
                return

    def start(self) -> Soak:
        """Start sampling."""
        self.sampler.start()
        self._finder.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        self.sampler.stop()

    def report(self, out: Path, since: float) -> dict[str, Any]:
        """Write the samples (CSV) and plots to ``out``; return the growth verdicts."""
        self.sampler.write_csv(out / "samples.csv")
        self.sampler.plot(out / "plots")
        verdicts = []
        for name in self.sampler.names():
            for measure in ("rss_mib", "threads", "fds", "mib", "files"):
                values = self.sampler.series(name, measure, since)
                if len(values) < 3:
                    continue
                g = growth(values)
                bound = SOAK_BOUNDS.get(measure)
                verdicts.append({"name": name, "measure": measure, "first": g.first,
                                 "last": g.last, "delta": g.delta,
                                 "grew": g.exceeds(*bound) if bound else None})
        return {"since_s": since, "growth": verdicts, "samples": str(out / "samples.csv")}


def _timeline(rounds: list[dict[str, Any]], result: SwarmResult) -> list[dict[str, Any]]:
    """Per round: when the sampled devices pulled their message, got it, replied."""
    rows = []
    for row in rounds:
        start = row.get("started_at")
        msgs = [m for d in result.devices for m in d.get("messages", [])
                if m[0] == "train" and m[1] == str(row.get("round"))]
        if start is None or not msgs:
            continue
        pulled = sorted(m[2] - start for m in msgs)
        fetch = sorted(m[3] - m[2] for m in msgs)
        reply = sorted(m[4] - m[3] for m in msgs)
        rows.append({"round": row.get("round"), "messages": len(msgs),
                     "pulled_after_s": [pulled[len(pulled) // 2], pulled[-1]],
                     "objects_s": [fetch[len(fetch) // 2], fetch[-1]],
                     "reply_s": [reply[len(reply) // 2], reply[-1]],
                     "wall_s": row.get("wall_s")})
    return rows


def _participation(record: dict[str, Any], result: SwarmResult,
                   args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Return rounds asked in and contributed to, summed over slow and other devices."""
    slow = {d["key"] for d in result.devices if d.get("train_s", 0.0) >= args.slow_s}
    per = record.get("participation") or {}
    out = {"slow": {"devices": 0, "asked": 0, "contributed": 0},
           "other": {"devices": 0, "asked": 0, "contributed": 0}}
    for device in result.devices:
        entry = per.get(str(device["node_id"]))
        if not entry:
            continue
        group = out["slow" if device["key"] in slow else "other"]
        group["devices"] += 1
        group["asked"] += int(entry.get("asked", 0))
        group["contributed"] += int(entry.get("contributed", 0))
    return out


def _warm_since(sampler: Sampler, record: dict[str, Any]) -> float:
    """Return the sampler's time at the end of round 2 (0 if unknown)."""
    rounds = record.get("rounds", [])
    if len(rounds) < 2:
        return 0.0
    started, wall = rounds[1].get("started_at"), rounds[1].get("wall_s")
    if not isinstance(started, (int, float)) or not isinstance(wall, (int, float)):
        return 0.0
    return max(0.0, float(sampler.now()) - (time.time() - (started + wall)))


def _paces(n: int, args: argparse.Namespace) -> list[Pace]:
    churn, slow, slow_s = args.churn, args.slow, args.slow_s
    timing = {"poll_s": args.poll_s, "heartbeat_s": args.heartbeat_s}
    paces = [Pace(**timing) for _ in range(n)]
    step = max(1, round(1 / churn)) if churn > 0 else 0
    for i in range(0, n, step) if step else ():
        paces[i] = Pace(vanish_in_round=1, away_s=20.0, **timing)
    slow_step = max(1, round(1 / slow)) if slow > 0 else 0
    for i in range(slow_step // 2, n, slow_step) if slow_step else ():
        paces[i] = Pace(train_s=slow_s, **timing)
    return paces


def run_size(n: int, args: argparse.Namespace, keys: list[Path]) -> dict[str, Any]:
    """Measure one fleet size; return every number."""
    work = Path(args.workdir) / f"size-{n}"
    shutil.rmtree(work, ignore_errors=True)
    authorized = work / "authorized"
    authorized.mkdir(parents=True)
    for key in keys[:n]:
        shutil.copyfile(f"{key}.pub", authorized / f"{key.name}.pub")
    sampled = max(10, round(0.1 * n))
    stack = Stack.start(StackOptions(work, authorized_keys=authorized,
                                     server_cpus=args.server_cpus,
                                     gateway_env=dict(args.gateway_env),
                                     server_env=dict(args.server_env)))
    out: dict[str, Any] = {"devices": n, "sampled": sampled,
                           "enrolment_s": stack.enrolment_s}
    swarm: Swarm | None = None
    watcher = Watcher(stack)
    try:
        swarm = Swarm.start(work / "swarm", stack.base_url, stack.ca_file, keys[:n],
                            _paces(n, args),
                            processes=args.processes, cpus=args.swarm_cpus,
                            duration_s=args.max_minutes * 60, ramp_s=min(60.0, n / 20),
                            devices_per_address=args.devices_per_address)
        swarm_cpu0 = procs.usage(swarm.pids()).cpu_s
        out["online_s"] = _wait_online(stack, n, timeout=600)
        profiles = _profile(stack, args, n, "idle")
        watcher.begin()
        time.sleep(args.idle)
        idle = watcher.end()
        for prof in profiles:
            prof.stop()
        run_id = stack.submit("--rounds", str(args.rounds), "--fraction-train",
                              f"{sampled / n:.6f}", "--min-clients", str(sampled),
                              "--eval-data", args.eval_data, "--fraction-evaluate",
                              f"{sampled / n:.6f}", *args.run_arg)
        watcher.begin()
        profiles = _profile(stack, args, n, "run")
        soak = Soak(stack, swarm, args.soak_interval).start() if args.soak else None
        try:
            record = stack.wait_run(run_id, timeout=args.rounds * 300 + 600)
        except TimeoutError:  # report what was done
            record = {**(stack.record(run_id) or {}), "status": "did not end in time"}
        busy = watcher.end()
        if soak is not None:
            soak.stop()
            # from the end of round 2: the ServerApp's imports and first round are paid
            warm = _warm_since(soak.sampler, record)
            out["soak"] = soak.report(Path(args.soak) / f"size-{n}", warm)
        for prof in profiles:
            prof.stop()
        swarm_cpu = procs.usage(swarm.pids()).cpu_s - swarm_cpu0
        out["database_mb"] = stack.database_bytes() / 2**20
    finally:
        watcher.close()
        if swarm is not None:
            swarm.stop()
        result = swarm.wait(grace_s=30) if swarm is not None else SwarmResult()
        stack.stop()
    rounds = record.get("rounds", [])
    out["timeline"] = _timeline(rounds, result)
    out["participation"] = _participation(record, result, args)
    if args.profile:
        out["profiles"] = [summarise(p) for p in sorted(Path(args.profile).glob(
            f"{n}-*.txt"))]
    out.update({
        "status": record.get("status"), "error": record.get("error"),
        "round_s": [r.get("wall_s") for r in rounds],
        "replies": [r.get("train_replies") for r in rounds],
        "silent": [[e.get("node_id") for e in r.get("errors", [])] for r in rounds],
        "rounds_per_min": 60 * len(rounds) / (busy.ended - busy.started),
        "swarm": {"cpu_cores": swarm_cpu / (busy.ended - idle.started),
                  "rss_mb": result.max_rss_mb, "retries": result.retries,
                  "transport_errors": result.transport_errors,
                  "failures": result.process_failures,
                  "statuses": result.statuses, "activation": result.activation(),
                  "device_errors": sum(len(d["errors"]) for d in result.devices)},
    })
    for name, w in (("idle", idle), ("run", busy)):
        out[name] = {
            "seconds": w.ended - w.started,
            "cores": {r: w.cores(r) for r in ROLES},
            "rss_mb": {r: w.rss_max.get(r) for r in ROLES},
            "threads": {r: w.threads_max.get(r) for r in ROLES},
            "fds": {r: w.fds_max.get(r) for r in ROLES},
            "requests_per_s": result.requests(w.started, w.ended) / (w.ended - w.started),
            "poll": result.latency("pull-messages", w.started, w.ended),
            "heartbeat": result.latency("send-node-heartbeat", w.started, w.ended),
        }
    return out


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def tables(results: list[dict[str, Any]]) -> str:
    """Return the markdown tables of ``results``."""
    lines = ["| devices | sampled/round | enrolment | all online | rounds ok | round time "
             "(median) | rounds/min | idle poll p50 / p95 / max | req/s idle / run | "
             "SuperLink DB |", "|" + "---|" * 10]
    for r in results:
        ok = sum(1 for x in r["replies"] if x)
        poll = r["idle"]["poll"]
        lines.append(
            f"| {r['devices']} | {r['sampled']} | {_fmt(r['enrolment_s'], ' s')} | "
            f"{_fmt(r['online_s'], ' s')} | {ok}/{len(r['round_s'])} | "
            f"{_fmt(statistics.median(r['round_s']) if r['round_s'] else None, ' s')} | "
            f"{_fmt(r['rounds_per_min'])} | {_fmt(poll['p50'], ' s', 2)} / "
            f"{_fmt(poll['p95'], ' s', 2)} / {_fmt(poll['max'], ' s', 2)} | "
            f"{_fmt(r['idle']['requests_per_s'], '', 0)} / "
            f"{_fmt(r['run']['requests_per_s'], '', 0)} | "
            f"{_fmt(r.get('database_mb'), ' MB')} |")
    lines += ["", "| devices | phase | SuperLink cores / MB | ServerApp cores / MB | "
              "gateway cores / MB | swarm cores / MB |", "|" + "---|" * 6]
    for r in results:
        for phase in ("idle", "run"):
            p = r[phase]
            cells = [f"{_fmt(p['cores'][role], '', 2)} / {_fmt(p['rss_mb'][role], '', 0)}"
                     for role in ROLES]
            swarm = (f"{_fmt(r['swarm']['cpu_cores'], '', 2)} / "
                     f"{_fmt(r['swarm']['rss_mb'], '', 0)}" if phase == "run" else "")
            lines.append(f"| {r['devices']} | {phase} | " + " | ".join(cells)
                         + f" | {swarm} |")
    for r in results:
        if "soak" not in r:
            continue
        lines += ["", f"Soak at {r['devices']} devices, {len(r['round_s'])} rounds (medians "
                  "of the first and last third after round 2):", "",
                  "| what | measure | first | last | grew |", "|---|---|---|---|---|"]
        lines += [f"| {g['name']} | {g['measure']} | {_fmt(g['first'])} | "
                  f"{_fmt(g['last'])} | {'-' if g['grew'] is None else g['grew']} |"
                  for g in r["soak"]["growth"]]
    return "\n".join(lines)


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    return [tuple(v.split("=", 1)) for v in values]  # type: ignore[misc]


def main() -> int:
    """Run the sizes asked for and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds of the idle window before the run")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-address", type=int, default=4)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--swarm-cpus", default="1")
    parser.add_argument("--churn", type=float, default=0.0,
                        help="share of devices that vanish in their first train round")
    parser.add_argument("--slow", type=float, default=0.0, help="share of slow devices")
    parser.add_argument("--slow-s", type=float, default=20.0)
    parser.add_argument("--poll-s", type=float, default=3.0,
                        help="devices' idle poll interval (fedfleet join --poll-interval)")
    parser.add_argument("--heartbeat-s", type=float, default=30.0,
                        help="devices' heartbeat (fedfleet join --heartbeat-interval)")
    parser.add_argument("--eval-data", default="builtin:digits")
    parser.add_argument("--run-arg", action="append", default=[],
                        help="extra 'fedfleet run' argument (repeat)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--max-minutes", type=float, default=60.0)
    parser.add_argument("--workdir", default="/tmp/fedfleet-scale")
    parser.add_argument("--keys-dir", default="/tmp/fedfleet-scale-keys")
    parser.add_argument("--json", default="")
    parser.add_argument("--soak", default="",
                        help="folder: sample every role, the swarm and the folders through "
                        "the run (CSV, plots, growth verdicts); for long runs")
    parser.add_argument("--soak-interval", type=float, default=5.0)
    parser.add_argument("--profile", default="",
                        help="folder for py-spy profiles of the SuperLink and ServerApp")
    args = parser.parse_args()
    args.server_cpus = [int(c) for c in args.server_cpus.split(",") if c]
    args.swarm_cpus = [int(c) for c in args.swarm_cpus.split(",") if c]
    args.gateway_env = _pairs(args.gateway_env)
    args.server_env = _pairs(args.server_env)
    sizes = [int(s) for s in args.sizes.split(",")]
    keys = make_keys(Path(args.keys_dir), max(sizes))
    results = []
    for n in sizes:
        print(f"# {n} devices", flush=True)
        results.append(run_size(n, args, keys))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "profiles"},
                         default=str)[:3000], flush=True)
        for text in results[-1].get("profiles", []):
            print(text, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"argv": sys.argv, "results": results},
                                                  indent=1, default=str), encoding="utf-8")
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
