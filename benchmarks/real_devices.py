"""Real devices at fleet size: one server and N real ``fedfleet join`` devices on 127.0.0.1.

    .venv/bin/python benchmarks/real_devices.py --devices 3 --rounds 2            # smoke
    .venv/bin/python benchmarks/real_devices.py --devices 10 --rounds 5
    .venv/bin/python benchmarks/real_devices.py --devices 10 --rounds 50 --soak \\
        --out soak-10x50 -- --keep-checkpoints 3     # after --: more 'fedfleet run' options

The server runs as users run it: TLS (a private CA from this script) and node
authentication, every device's key registered on start with ``--authorized-keys``.
Each device is a real ``fedfleet join`` (its SuperNode, warm TensorFlow trainer,
SuperExec and a ClientApp per message) on partition i of N of the built-in digits
(IID), training for real. After all devices are online and a short idle phase,
``fedfleet run`` submits R rounds with ``--fraction-train`` set so that about
``--train-per-round`` devices train each round (and ``--min-clients`` set to that
count too: fedfleet passes ``--min-clients`` to Flower as ``min_train_nodes``, so
``--min-clients N`` would make all N train whatever the fraction).

Reports: time until all N keys are registered and all N devices online, every
round's time, each device's idle and peak memory (RSS of all its processes), the
server's CPU and memory (SuperLink alone, ServerApp), as a markdown table on stdout
and ``OUT/real_devices.json``. With ``--soak`` it also writes every sample
(``OUT/samples.csv``, plots in ``OUT/plots/``: memory, threads, open files of the
server and every device; sizes of the state folder, the run folder and the SuperLink
database with its -wal/-shm) and says, for each, whether it grew between the first
and the last third of the run, against the bounds stated in the table.

Everything it starts runs in its own session and is stopped (SIGTERM, then SIGKILL)
before it exits, also on an error, Ctrl-C or ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from ports import free_port
from sampler import Sampler, find_in_tree, growth, sqlite_files

VENV_BIN = Path(sys.executable).parent
FEDFLEET = str(VENV_BIN / "fedfleet")
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
         "TF_CPP_MIN_LOG_LEVEL": "3"}

BOUNDS = {"rss_mib": (50.0, 0.10), "threads": (4.0, 0.0), "fds": (8.0, 0.0),
          "mib": (0.5, 0.05), "files": (0.0, 0.0)}
"""Growth allowed between the first and last third of the run (absolute, relative)
before ``--soak`` says a measure grew. Paths (``mib``, ``files``) may grow by design
(the run folder gains a checkpoint a round without ``--keep-checkpoints``; the
SuperLink database keeps every run's messages): there it is a trend, not a fault."""


class Deadline(Exception):
    """The benchmark ran out of time (``--timeout``)."""


class Processes:
    """Every process this benchmark starts; :meth:`stop_all` leaves none behind."""

    def __init__(self, workdir: Path) -> None:
        """Log each process to ``workdir/NAME.log``."""
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``fedfleet ARGS`` in its own session."""
        with (self.workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([FEDFLEET, *args], cwd=self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **QUIET})
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """Return what process ``name`` printed so far."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self, grace: float = 30.0) -> None:
        """SIGTERM every process group, wait up to ``grace`` s in all, then SIGKILL."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():  # stragglers, and children left in the groups
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"[bench] process {proc.pid} did not stop", file=sys.stderr)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for(what: str, check: Callable[[], bool], deadline: float,
              poll: float = 1.0) -> float:
    """Poll ``check`` until true; return when it became true (monotonic)."""
    while not check():
        if time.monotonic() > deadline:
            raise Deadline(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.monotonic()


def _prepare(work: Path, devices: int) -> None:
    """Write the CA and server certificate, and one node key per device."""
    from fedfleet.server.host.certs import create_certificates
    from fedfleet.shared.keys import create_node_key

    create_certificates(work / "certificates", ["127.0.0.1"])
    (work / "keys").mkdir()
    (work / "devices").mkdir()
    for i in range(devices):
        create_node_key(work / "keys" / f"device-{i}.key")
        (work / "devices" / f"device-{i}.pub").write_bytes(
            (work / "keys" / f"device-{i}.key.pub").read_bytes())


def _online(work: Path, connection: list[str]) -> int:
    """Return how many devices the SuperLink lists as online right now."""
    listed = subprocess.run([FEDFLEET, "nodes", "list", *connection, "--format", "json"],
                            cwd=work, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **QUIET}, check=False)
    if listed.returncode != 0:
        return 0
    try:
        nodes = json.loads(listed.stdout)
    except json.JSONDecodeError:
        return 0
    return sum(1 for n in nodes if n.get("status") == "online")


def _rounds_done(work: Path) -> int:
    for found in (work / "runs").glob("run-*/metrics.json"):
        try:
            return len(json.loads(found.read_text()).get("rounds", []))
        except (OSError, json.JSONDecodeError):
            return 0
    return 0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _phase_stats(sampler: Sampler, name: str, since: float, until: float
                 ) -> dict[str, float | None]:
    rss = sampler.series(name, "rss_mib", since, until)
    cpu = sampler.series(name, "cpu_s", since, until)
    return {"rss_median_mib": _median(rss), "rss_peak_mib": max(rss) if rss else None,
            "threads_peak": sampler.peak(name, "threads", since, until),
            "fds_peak": sampler.peak(name, "fds", since, until),
            "cpu_s": (cpu[-1] - cpu[0]) if len(cpu) >= 2 else None}


def _growth_verdicts(sampler: Sampler, since: float, until: float) -> list[dict[str, Any]]:
    out = []
    for name in sampler.names():
        for measure in ("rss_mib", "threads", "fds", "mib", "files"):
            values = sampler.series(name, measure, since, until)
            if len(values) < 3:
                continue
            g = growth(values)
            bound = BOUNDS[measure]
            out.append({"name": name, "measure": measure, "first": g.first, "last": g.last,
                        "delta": g.delta, "bound": bound, "grew": g.exceeds(*bound)})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark once and return every number it reports."""
    out: Path = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True)
    _prepare(work, args.devices)
    port = free_port()
    connection = ["--server", f"127.0.0.1:{port}", "--root-certificates",
                  "certificates/ca.crt"]
    procs = Processes(work)
    sampler = Sampler(args.interval)
    deadline = time.monotonic() + args.timeout
    marks: dict[str, float] = {}
    try:
        t_server = time.monotonic()
        server = procs.start("server", "server", "--port", str(port), "--state-dir",
                             "state", "--output-dir", "runs", "--authorized-keys",
                             "devices", "--no-run")
        sampler.watch("server", server.pid).watch_path("state-dir", work / "state")
        sampler.watch_path("superlink-db", *sqlite_files(work / "state" / "superlink.db"))
        sampler.watch_path("runs-dir", work / "runs")
        sampler.start()
        t_registered = _wait_for(
            "every key to be registered",
            lambda: procs.log("server").count(" as node ") >= args.devices
            or server.poll() is not None, deadline, 0.5)
        if server.poll() is not None:
            raise RuntimeError(f"the server stopped:\n{procs.log('server')[-3000:]}")
        superlink = find_in_tree(server.pid, "flower-superlink")
        if superlink is not None:
            sampler.watch("superlink", superlink, tree=False)

        t_joins = time.monotonic()
        marks["joins_start"] = sampler.now()
        for i in range(args.devices):
            join = procs.start(
                f"device-{i}", "join", *connection, "--node-key", f"keys/device-{i}.key",
                "--partition", f"{i}/{args.devices}", "--runtime-port", str(free_port()),
                "--home", f"homes/device-{i}", "--connect-timeout", "120")
            sampler.watch(f"device-{i}", join.pid)
        t_online = _wait_for("every device to be online",
                             lambda: _online(work, connection) >= args.devices, deadline, 2)
        marks["idle_start"] = sampler.now()
        time.sleep(args.idle_seconds)
        marks["idle_end"] = sampler.now()

        fraction = min(1.0, args.train_per_round / args.devices)
        per_round = min(args.devices, args.train_per_round)  # --min-clients is also
        # Flower's min_train_nodes: with N, all N would train whatever the fraction
        t_run = time.monotonic()
        marks["run_start"] = sampler.now()
        submitted = procs.start(
            "run", "run", *connection, "--rounds", str(args.rounds), "--min-clients",
            str(per_round), "--fraction-train", f"{fraction:.6g}",
            "--fraction-evaluate", f"{fraction:.6g}", "--local-epochs",
            str(args.local_epochs), "--partitioning", "iid", "--output-dir", "runs",
            "--client-wait-timeout", "120", *args.run_args)
        while submitted.poll() is None:
            if time.monotonic() > deadline:
                raise Deadline(f"the run did not finish within --timeout {args.timeout}s")
            if "warm" not in marks and _rounds_done(work) >= 1:
                marks["warm"] = sampler.now()  # round 1 done: start-up costs are paid
            if "serverapp" not in sampler.names():
                app = find_in_tree(server.pid, "flwr-serverapp")
                if app is not None:
                    sampler.watch("serverapp", app)
            time.sleep(0.5)
        marks["run_end"] = sampler.now()
        t_done = time.monotonic()
        if submitted.returncode != 0:
            raise RuntimeError(f"fedfleet run failed:\n{procs.log('run')[-3000:]}")
        sampler.stop()
    finally:
        sampler.stop()
        procs.stop_all()
    return _results(args, work, sampler, marks, {
        "registered_s": t_registered - t_server, "online_s": t_online - t_joins,
        "run_s": t_done - t_run, "fraction_train": fraction})


def _results(args: argparse.Namespace, work: Path, sampler: Sampler,
             marks: dict[str, float], times: dict[str, float]) -> dict[str, Any]:
    (run_dir,) = (work / "runs").glob("run-*")
    record = json.loads((run_dir / "metrics.json").read_text())
    rounds = [{"round": r["round"], "wall_s": r.get("wall_s"),
               "train_replies": r.get("train_replies"),
               "train_failures": r.get("train_failures"),
               "central_accuracy": r.get("central_accuracy")} for r in record["rounds"]]
    idle, busy = (marks["idle_start"], marks["idle_end"]), (marks["run_start"],
                                                            marks["run_end"])
    devices = {}
    for i in range(args.devices):
        name = f"device-{i}"
        rss_idle = sampler.series(name, "rss_mib", *idle)
        devices[name] = {"startup_peak_rss_mib": sampler.peak(
                             name, "rss_mib", marks["joins_start"], marks["idle_start"]),
                         "idle_rss_mib": _median(rss_idle),
                         "peak_rss_mib": sampler.peak(name, "rss_mib", *busy),
                         "run": _phase_stats(sampler, name, *busy)}
    server = {name: {"idle": _phase_stats(sampler, name, *idle),
                     "run": _phase_stats(sampler, name, *busy)}
              for name in ("superlink", "serverapp", "server") if name in sampler.names()}
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.keras"))
    result: dict[str, Any] = {
        "setup": {"devices": args.devices, "rounds": args.rounds,
                  "train_per_round": args.train_per_round,
                  "fraction_train": times["fraction_train"],
                  "local_epochs": args.local_epochs, "security": "TLS + node auth",
                  "interval_s": args.interval, "cpus": os.cpu_count(),
                  "run_args": args.run_args},
        "times": {k: v for k, v in times.items() if k != "fraction_train"},
        "rounds": rounds, "status": record.get("status"),
        "devices": devices, "server": server, "checkpoints": checkpoints,
        "out": str(args.out.resolve())}
    if args.soak:
        out = args.out.resolve()
        sampler.write_csv(out / "samples.csv")
        sampler.plot(out / "plots")
        # from the end of round 1 (TensorFlow graphs, caches and the app install paid)
        result["growth_window_s"] = (marks.get("warm", busy[0]), busy[1])
        result["growth"] = _growth_verdicts(sampler, *result["growth_window_s"])
    return result


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bound(bound: tuple[float, float]) -> str:
    return f"+{bound[0]:g} + {100 * bound[1]:g}%"


def render(result: dict[str, Any]) -> str:
    """Return the results as markdown."""
    setup, times = result["setup"], result["times"]
    walls = [r["wall_s"] for r in result["rounds"] if r["wall_s"] is not None]
    idle = [d["idle_rss_mib"] for d in result["devices"].values() if d["idle_rss_mib"]]
    peak = [d["peak_rss_mib"] for d in result["devices"].values() if d["peak_rss_mib"]]
    start = [d["startup_peak_rss_mib"] for d in result["devices"].values()
             if d["startup_peak_rss_mib"]]

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return (f"median {statistics.median(values):.0f}, min {min(values):.0f}, "
                f"max {max(values):.0f}")

    lines = [f"## {setup['devices']} real devices x {setup['rounds']} rounds "
             f"({setup['security']}, {setup['cpus']} CPUs, fraction-train "
             f"{setup['fraction_train']:.3g})", "",
             "| measure | value |", "|---|---|",
             f"| all {setup['devices']} keys registered (server start) | "
             f"{times['registered_s']:.1f} s |",
             f"| all {setup['devices']} devices online (first join start) | "
             f"{times['online_s']:.1f} s |",
             f"| run (submit to end) | {times['run_s']:.1f} s, status {result['status']} |",
             f"| round time (s) | {spread(walls)} |",
             f"| device start-up peak RSS, all its processes (MiB) | {spread(start)} |",
             f"| device idle RSS, all its processes (MiB) | {spread(idle)} |",
             f"| device peak RSS during the run (MiB) | {spread(peak)} |"]
    for name, phases in result["server"].items():
        run = phases["run"]
        lines.append(f"| {name}: RSS idle / run median / run peak (MiB) | "
                     f"{_fmt(phases['idle']['rss_median_mib'], 0)} / "
                     f"{_fmt(run['rss_median_mib'], 0)} / {_fmt(run['rss_peak_mib'], 0)} |")
        lines.append(f"| {name}: CPU s during the run, peak threads, peak fds | "
                     f"{_fmt(run['cpu_s'])}, {_fmt(run['threads_peak'], 0)}, "
                     f"{_fmt(run['fds_peak'], 0)} |")
    lines.append(f"| checkpoints left | {len(result['checkpoints'])} |")
    lines += ["", "| round | wall s | train replies | failures | test acc |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['round']} | {_fmt(r['wall_s'])} | {_fmt(r['train_replies'])} | "
              f"{_fmt(r['train_failures'])} | {_fmt(r['central_accuracy'], 4)} |"
              for r in result["rounds"]]
    lines += ["", "| device | start-up peak RSS MiB | idle RSS MiB | run peak RSS MiB | "
              "run CPU s | peak threads |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(d['startup_peak_rss_mib'], 0)} | "
              f"{_fmt(d['idle_rss_mib'], 0)} | {_fmt(d['peak_rss_mib'], 0)} | "
              f"{_fmt(d['run']['cpu_s'])} | {_fmt(d['run']['threads_peak'], 0)} |"
              for name, d in result["devices"].items()]
    if "growth" in result:
        since, until = result["growth_window_s"]
        lines += ["", f"Growth from the end of round 1 to the end of the run ({since:.0f}-"
                  f"{until:.0f} s), median of the first third -> last third "
                  "(bound: absolute + relative x first):", "",
                  "| name | measure | first | last | bound | grew |", "|---|---|---|---|---|---|"]
        lines += [f"| {g['name']} | {g['measure']} | {g['first']:.1f} | {g['last']:.1f} | "
                  f"{_bound(g['bound'])} | {'**yes**' if g['grew'] else 'no'} |"
                  for g in result["growth"]]
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-per-round", type=int, default=5,
                        help="devices that train each round (sets --fraction-train)")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="all online, before the run: the devices' idle memory")
    parser.add_argument("--interval", type=float, default=0.5, help="sampling interval, s")
    parser.add_argument("--soak", action="store_true",
                        help="also write samples.csv, plots/ and the growth verdicts")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="stop everything after this many seconds")
    parser.add_argument("--out", type=Path,
                        default=Path(f"real-devices-{time.strftime('%Y%m%d-%H%M%S')}"))
    parser.add_argument("run_args", nargs="*",
                        help="after --: more 'fedfleet run' options")
    args = parser.parse_args(argv)
    if args.devices < 1 or args.rounds < 1 or args.train_per_round < 1:
        parser.error("--devices, --rounds and --train-per-round must be >= 1")
    return args


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print markdown, write ``OUT/real_devices.json`` and ``.md``."""
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_signal)  # cleanup runs on SIGTERM too
    try:
        result = run(args)
    except (Deadline, RuntimeError) as err:
        print(f"[bench] failed: {err}\n(logs in {args.out.resolve() / 'work'})",
              file=sys.stderr)
        return 1
    text = render(result)
    (args.out / "real_devices.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / "real_devices.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
