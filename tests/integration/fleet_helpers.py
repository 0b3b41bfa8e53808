"""Start fedfleet processes for integration tests, and make sure they all stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ports import free_port

FEDFLEET = str(Path(sys.executable).parent / "fedfleet")


def cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a short fedfleet command and return its result."""
    return subprocess.run([FEDFLEET, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)




class Fleet:
    """Starts fedfleet processes and guarantees they are gone afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, wrap: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``fedfleet ARGS`` (behind ``wrap``, e.g. faketime), logging to NAME.log."""
        return self.spawn(name, [*wrap, FEDFLEET, *args],
                          {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", **(env or {})})

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start any command in its own session, logging to NAME.log."""
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        self.procs.append(proc)
        return proc

    def device_with_trainer(self, name: str, port: int, trainer: list[str],
                            partition: tuple[int, int]) -> None:
        """Start a device: the real SuperNode, with ``trainer --socket PATH`` as its trainer.

        For devices whose trainer misbehaves (poisoned_worker.py, silent_worker.py).
        """
        from fedfleet.client.node import JoinOptions, supernode_command
        from fedfleet.client.nodedata import NodeData
        from fedfleet.shared import process

        opts = JoinOptions(server=f"127.0.0.1:{port}", home=self.workdir / name,
                           insecure=True, runtime_port=free_port(),
                           node=NodeData(data_path="builtin:digits",
                                         partition_id=partition[0],
                                         num_partitions=partition[1]))
        env = process.flower_env(opts.home, {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
        self.spawn(f"{name}-trainer", [*trainer, "--socket", str(opts.trainer_socket)], env)
        self.spawn(name, supernode_command(opts), env)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
