"""Poisoned updates against each strategy: final accuracy next to a clean run.

One SuperLink, four honest devices and one attacker stay up; the runs go one after
another with `fedfleet run`. The attacker is a real SuperNode and ClientApp whose
trainer (tests/integration/poisoned_worker.py) returns a poisoned update: scaled
x1000, sign-flipped (x10) or random noise of the honest norm. The strategies are
measured with fedfleet's update checks off, then FedAvg with them on.

    .venv/bin/python benchmarks/robustness.py      # ~15 min -> docs/robustness.{md,json}
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet import FEDFLEET, QUIET, _stop_group, free_port

from fedfleet.shared.runrecord import read_record

ROOT = Path(__file__).resolve().parents[1]
POISONED = ROOT / "tests" / "integration" / "poisoned_worker.py"
ROUNDS = 3
STRATEGY_ARGS = {"fedtrimmedavg": ["--strategy-param", "beta=0.2"],
                 "krum": ["--strategy-param", "num_malicious_nodes=1"],
                 "multikrum": ["--strategy-param", "num_malicious_nodes=1",
                               "--strategy-param", "num_nodes_to_select=3"]}
OFF = ["--max-update-norm-ratio", "0"]
MATRIX = [("fedavg", "none", OFF)] + [
    (strategy, attack, OFF) for attack in ("scale", "flip", "random")
    for strategy in ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum")] + [
    ("fedavg", attack, []) for attack in ("scale", "flip", "random")]


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env, cwd=log.parent)


def main() -> None:
    """Run the matrix and write docs/robustness.md and .json."""
    from fedfleet.client.node import JoinOptions, supernode_command
    from fedfleet.client.nodedata import NodeData
    from fedfleet.shared import process

    work = Path(tempfile.mkdtemp(prefix="fedfleet-robust-"))
    port = free_port()
    server_args = ["--insecure", "--server", f"127.0.0.1:{port}", "--state-dir", "cli"]
    procs = [_start([FEDFLEET, "server", "--insecure", "--port", str(port), "--no-run",
                     "--state-dir", "state"], work / "server.log")]
    for i in range(4):
        procs.append(_start([FEDFLEET, "join", "--insecure", "--server",
                             f"127.0.0.1:{port}", "--partition", f"{i}/5",
                             "--runtime-port", str(free_port()), "--home", f"c{i}"],
                            work / f"client{i}.log"))
    opts = JoinOptions(server=f"127.0.0.1:{port}", home=work / "attacker", insecure=True,
                       node=NodeData(data_path="builtin:digits", partition_id=4,
                                     num_partitions=5), runtime_port=free_port())
    env = process.flower_env(opts.home, {**QUIET, "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
    procs.append(_start(supernode_command(opts), work / "attacker.log", env))
    trainer: subprocess.Popen[bytes] | None = None
    results: list[dict[str, Any]] = []
    try:
        for strategy, attack, extra in MATRIX:
            if trainer is not None:
                _stop_group(trainer)
            trainer = _start([sys.executable, str(POISONED), attack, "--socket",
                              str(opts.trainer_socket)], work / "attacker-trainer.log", env)
            time.sleep(8)  # TensorFlow import in the fresh trainer
            t0 = time.monotonic()
            done = subprocess.run(
                [FEDFLEET, "run", *server_args, "--rounds", str(ROUNDS), "--min-clients",
                 "5", "--strategy", strategy, "--local-epochs", "1", "--partitioning",
                 "iid", "--output-dir", "out", "--client-wait-timeout", "300",
                 *STRATEGY_ARGS.get(strategy, []), *extra],
                cwd=work, capture_output=True, text=True, timeout=1200, check=False)
            run_id = next((w for line in done.stdout.splitlines() if line.startswith("done")
                           for w in line.split() if w.isdigit()), None)
            row: dict[str, Any] = {"strategy": strategy, "attack": attack,
                                   "update_checks": not extra, "seconds":
                                   round(time.monotonic() - t0, 1)}
            if run_id is None:
                row["error"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
            else:
                record = read_record(work / "out" / f"run-{run_id}")
                rounds = record["rounds"] if record is not None else []
                row.update(accuracy=rounds[-1].get("central_accuracy") if rounds else None,
                           rejected=sum(r.get("rejected_replies", 0) for r in rounds),
                           replies=sum(r.get("train_replies", 0) for r in rounds))
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for proc in [*procs, *([trainer] if trainer else [])]:
            _stop_group(proc)
    (ROOT / "docs" / "robustness.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "clients": 5,
         "results": results}, indent=1))
    (ROOT / "docs" / "robustness.md").write_text(render(results))


def render(results: list[dict[str, Any]]) -> str:
    """Return the markdown table."""
    clean = next((r.get("accuracy") for r in results if r["attack"] == "none"), None)
    lines = ["# Poisoned updates vs strategies", "",
             f"`benchmarks/robustness.py`, {time.strftime('%Y-%m-%d')}: 5 devices on the "
             f"built-in digits (IID), 1 of them an attacker, {ROUNDS} rounds, 1 local epoch; "
             "final centralized test accuracy.", "",
             "| strategy | attack | update checks | accuracy | vs clean | rejected replies |",
             "|---|---|---|---|---|---|"]
    for r in results:
        acc = r.get("accuracy")
        delta = f"{(acc - clean) * 100:+.1f} pp" if acc is not None and clean else "-"
        lines.append(f"| {r['strategy']} | {r['attack']} | "
                     f"{'on' if r['update_checks'] else 'off'} | "
                     f"{f'{acc:.1%}' if acc is not None else r.get('error')} | {delta} | "
                     f"{r.get('rejected', '-')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
