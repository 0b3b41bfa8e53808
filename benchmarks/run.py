"""fedfleet benchmark suite: fedfleet next to the reference Flower app, in one run.

    .venv/bin/python benchmarks/run.py                      # full suite (~40 min)
    .venv/bin/python benchmarks/run.py --quick              # 1 repeat, fewer rounds

Writes docs/benchmarks.md (tables) and docs/benchmarks.json (every number). The
reference is `../shared/baseline` (a straightforward Flower 1.42 TensorFlow app and
its harness); both sides run on 127.0.0.1 with the same data, clients, rounds and
training settings, interleaved so that machine noise hits both alike. Ratios are
fedfleet / reference within this run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from fleet import Scenario, run_fedfleet, run_reference

ROOT = Path(__file__).parents[1]


def _spread(values: list[float]) -> dict[str, float | None]:
    clean = [v for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "n": len(clean)}


def _repeat(label: str, runs: int, make: Callable[[], dict[str, Any]]
            ) -> list[dict[str, Any]]:
    results = []
    for i in range(runs):
        print(f"[bench] {label} {i + 1}/{runs}", flush=True)
        results.append(make())
    return results


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("median_overhead_s", "median_round_s", "time_to_target_s", "final_accuracy",
            "wire_ratio", "edge_peak_mb", "edge_round_peak_mb", "client_start_s")
    return {k: _spread([r[k] for r in results]) for k in keys}


def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "versions": {p: version(p) for p in ("flwr", "tensorflow-cpu", "tensorflow",
                                                 "keras", "numpy", "fedfleet-client")}}


def main() -> None:
    """Run the suite and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=ROOT.parent / "shared/baseline")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scaling", default="1,3,5,10",
                        help="client counts for the fedfleet scaling runs")
    parser.add_argument("--reference-scaling", default="1,3",
                        help="client counts for the reference scaling runs")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 4 rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.rounds = 1, 4
    data = args.baseline / "digits.npz"
    base = Scenario(clients=3, rounds=args.rounds)

    ours: list[dict[str, Any]] = []
    ref: list[dict[str, Any]] = []
    for i in range(args.repeats):  # interleaved: noise hits both sides alike
        print(f"[bench] main comparison, repeat {i + 1}/{args.repeats}", flush=True)
        ref.append(run_reference(base, args.baseline, data))
        ours.append(run_fedfleet(base))
    compression = {m: _repeat(f"fedfleet {m}", args.repeats,
                              lambda m=m: run_fedfleet(replace(base, compression=m)))
                   for m in ("float16", "int8")}
    scaling_rounds = 3
    scaling = {n: run_fedfleet(replace(base, clients=n, rounds=scaling_rounds))
               for n in map(int, args.scaling.split(","))}
    ref_scaling = {n: (ref[0] if n == base.clients and args.rounds == scaling_rounds
                       else run_reference(replace(base, clients=n, rounds=scaling_rounds),
                                          args.baseline, data))
                   for n in map(int, args.reference_scaling.split(","))}

    results = {"machine": _machine(), "scenario": asdict(base),
               "fedfleet": {"summary": _summary(ours), "runs": ours},
               "reference": {"summary": _summary(ref), "runs": ref},
               "compression": {m: {"summary": _summary(r), "runs": r}
                               for m, r in compression.items()},
               "scaling": {"fedfleet": scaling, "reference": ref_scaling}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "benchmarks.md").write_text(render(results))
    print((args.out / "benchmarks.md").read_text())


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _cell(s: dict[str, Any], unit: str = "", digits: int = 2, scale: float = 1.0) -> str:
    if s["median"] is None:
        return "not reached"
    mid = _fmt(s["median"] * scale, unit, digits)
    if s["n"] > 1:
        return f"{mid} ({_fmt(s['min'] * scale, '', digits)}–{_fmt(s['max'] * scale, '', digits)})"
    return mid


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["median"] is None or not b["median"]:
        return "n/a"
    return f"{a['median'] / b['median']:.2f}x"


def render(res: dict[str, Any]) -> str:
    """Return the markdown report."""
    m, sc = res["machine"], res["scenario"]
    ours, ref = res["fedfleet"]["summary"], res["reference"]["summary"]
    lines = [
        "# fedfleet benchmarks",
        "",
        f"Measured {m['date_utc']} on {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
        f"Scenario: {sc['clients']} clients on 127.0.0.1, {sc['rounds']} rounds, digits "
        f"data ({sc['partitioning']}), local epochs {sc['local_epochs']}, batch "
        f"{sc['batch_size']}, learning rate {sc['learning_rate']}. Reference: "
        "`shared/baseline` (Flower 1.42 defaults, separate evaluate message per round). "
        "fedfleet: defaults (warm trainer, evaluation folded into the train message, "
        "prompt reply polling). Medians over repeats (min–max in brackets); ratios are "
        "fedfleet / reference from the same run of the suite.",
        "",
        "| measure | reference | fedfleet | ratio |",
        "|---|---|---|---|",
        f"| round overhead (round wall − slowest client's training; median of rounds ≥ 2) "
        f"| {_cell(ref['median_overhead_s'], ' s')} | {_cell(ours['median_overhead_s'], ' s')}"
        f" | {_ratio(ours['median_overhead_s'], ref['median_overhead_s'])} |",
        f"| round wall time (median of rounds ≥ 2) | {_cell(ref['median_round_s'], ' s')} | "
        f"{_cell(ours['median_round_s'], ' s')} | "
        f"{_ratio(ours['median_round_s'], ref['median_round_s'])} |",
        f"| time to {sc['target_accuracy']:.0%} test accuracy (from round 1 start) | "
        f"{_cell(ref['time_to_target_s'], ' s', 1)} | {_cell(ours['time_to_target_s'], ' s', 1)}"
        f" | {_ratio(ours['time_to_target_s'], ref['time_to_target_s'])} |",
        f"| final test accuracy | {_cell(ref['final_accuracy'], '%', 1, 100)} | "
        f"{_cell(ours['final_accuracy'], '%', 1, 100)} | |",
        f"| bytes on the wire per client per round ÷ (2 × float32 model) | "
        f"{_cell(ref['wire_ratio'])} | {_cell(ours['wire_ratio'])} | "
        f"{_ratio(ours['wire_ratio'], ref['wire_ratio'])} |",
        f"| peak edge memory per device during rounds ≥ 2 (resident memory of all its "
        f"processes together, sampled every 0.1 s) | "
        f"{_cell(ref['edge_round_peak_mb'], ' MB', 0)} | "
        f"{_cell(ours['edge_round_peak_mb'], ' MB', 0)} | "
        f"{_ratio(ours['edge_round_peak_mb'], ref['edge_round_peak_mb'])} |",
        f"| sum of each edge process's lifetime peak (VmHWM, includes start-up) | "
        f"{_cell(ref['edge_peak_mb'], ' MB', 0)} | {_cell(ours['edge_peak_mb'], ' MB', 0)} | "
        f"{_ratio(ours['edge_peak_mb'], ref['edge_peak_mb'])} |",
        f"| client start → node registered | {_cell(ref['client_start_s'], ' s', 1)} | "
        f"{_cell(ours['client_start_s'], ' s', 1)} | |",
        "",
        "## Edge memory by process (first run, MB)",
        "",
        "Peak resident memory of each process during rounds ≥ 2 (sampled), and its "
        "lifetime peak (VmHWM). The warm trainer's lifetime peak is its start-up, before "
        "it releases TensorFlow's start-up code pages (`fedfleet.client.memory`).",
        "",
        "| process | reference, rounds | reference, lifetime | fedfleet, rounds "
        "| fedfleet, lifetime |",
        "|---|---|---|---|---|",
    ]
    ref_run, our_run = res["reference"]["runs"][0], res["fedfleet"]["runs"][0]
    for name in ("join", "supernode", "superexec", "trainer", "clientapp"):
        cells = [_fmt(run.get(key, {}).get(name), "", 0) for run in (ref_run, our_run)
                 for key in ("edge_round_processes_mb", "edge_processes_mb")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Compression (fedfleet)", "",
              "| compression | wire ratio | final test accuracy | Δ accuracy vs float32 |",
              "|---|---|---|---|",
              f"| none (float32) | {_cell(ours['wire_ratio'])} | "
              f"{_cell(ours['final_accuracy'], '%', 1, 100)} | |"]
    for method, block in res["compression"].items():
        s = block["summary"]
        delta = (None if s["final_accuracy"]["median"] is None else
                 100 * (s["final_accuracy"]["median"] - ours["final_accuracy"]["median"]))
        lines.append(f"| {method} | {_cell(s['wire_ratio'])} | "
                     f"{_cell(s['final_accuracy'], '%', 1, 100)} | "
                     f"{_fmt(delta, ' pp', 1)} |")
    lines += ["", "## Round time by number of clients (3 rounds, median of rounds ≥ 2)", "",
              "| clients | reference | fedfleet |", "|---|---|---|"]
    scaling = res["scaling"]
    for n in sorted({*map(int, scaling["fedfleet"]), *map(int, scaling["reference"])}):
        r = scaling["reference"].get(n) or scaling["reference"].get(str(n))
        o = scaling["fedfleet"].get(n) or scaling["fedfleet"].get(str(n))
        lines.append(f"| {n} | {_fmt(r['median_round_s'] if r else None, ' s')} | "
                     f"{_fmt(o['median_round_s'] if o else None, ' s')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
