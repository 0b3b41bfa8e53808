"""One silent device among three: how long a round waits for it.

Two honest devices and one whose trainer takes the train message and never answers
(tests/integration/silent_worker.py; its SuperNode and ClientApp are real and alive,
so Flower's heartbeat rule does not catch it). Prints each round's wall time, the
honest devices' slowest training time and the round's errors, from metrics.json.

    .venv/bin/python benchmarks/silent_device.py [--rounds N] [fedfleet server options]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet import FEDFLEET, QUIET, _stop_group, free_port

from fedfleet.shared.runrecord import read_record

ROOT = Path(__file__).resolve().parents[1]
SILENT = ROOT / "tests" / "integration" / "silent_worker.py"


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env, cwd=log.parent)


def main(extra: list[str]) -> None:
    """Run the fleet once and print what the rounds waited."""
    from fedfleet.client.node import JoinOptions, supernode_command
    from fedfleet.client.nodedata import NodeData
    from fedfleet.shared import process

    work = Path(tempfile.mkdtemp(prefix="fedfleet-silent-"))
    port = free_port()
    rounds = ["--rounds", "2"] if "--rounds" not in extra else []
    server = _start([FEDFLEET, "server", "--insecure", "--port", str(port),
                     "--min-clients", "3", "--local-epochs", "1", "--exit-when-done",
                     "--state-dir", "state", "--output-dir", "out", *rounds, *extra],
                    work / "server.log", {**process.flower_env(work / "sh"), **QUIET})
    procs = [server]
    for i in range(2):
        procs.append(_start([FEDFLEET, "join", "--insecure", "--server",
                             f"127.0.0.1:{port}", "--partition", f"{i}/3",
                             "--runtime-port", str(free_port()), "--home", f"c{i}"],
                            work / f"client{i}.log"))
    opts = JoinOptions(server=f"127.0.0.1:{port}", home=work / "silent", insecure=True,
                       node=NodeData(data_path="builtin:digits", partition_id=2,
                                     num_partitions=3), runtime_port=free_port())
    env = process.flower_env(opts.home, {**QUIET, "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
    procs.append(_start([sys.executable, str(SILENT), "--socket", str(opts.trainer_socket)],
                        work / "silent-trainer.log", env))
    procs.append(_start(supernode_command(opts), work / "silent.log", env))
    t0 = time.monotonic()
    try:
        server.wait(timeout=3600)
    finally:
        for proc in procs:
            _stop_group(proc)
    print(f"server exited {server.returncode} after {time.monotonic() - t0:.1f}s; "
          f"logs in {work}")
    for run_dir in (work / "out").glob("run-*"):
        record = read_record(run_dir)
        for row in record["rounds"] if record is not None else []:
            times = [c.get("device", {}).get("train_time_s") for c in row.get("clients", [])]
            fits = [t for t in times if t is not None]
            print(f"round {row.get('round')}: wall {row.get('wall_s', 0):.1f}s, "
                  f"{row.get('train_replies')} replies, slowest honest fit "
                  f"{max(fits, default=0):.1f}s, train phase "
                  f"{row.get('train_phase_s', 0):.1f}s, errors {row.get('errors')}")


if __name__ == "__main__":
    main(sys.argv[1:])
