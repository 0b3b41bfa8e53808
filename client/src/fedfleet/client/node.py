"""Join a device to a server: check the data and the server, then run a SuperNode."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fedfleet.client.activity import Activity
from fedfleet.client.flower_patch import (
    FLOWER_HEARTBEAT_INTERVAL,
    FLOWER_POLL_INTERVAL,
    PatchError,
    require_version,
)
from fedfleet.client.nodedata import NodeData
from fedfleet.client.supervisor import WorkerSupervisor
from fedfleet.shared import process
from fedfleet.shared.constants import SUPERNODE_PORT
from fedfleet.shared.errors import DataError, FedfleetError
from fedfleet.shared.tether import tethered

log = logging.getLogger("fedfleet")


@dataclass(frozen=True)
class JoinOptions:
    """How to reach the server and run the local SuperNode."""

    server: str
    node: NodeData
    home: Path
    insecure: bool = False
    root_certificates: Path | None = None
    node_key: Path | None = None
    runtime_port: int = SUPERNODE_PORT
    connect_timeout: float = 120.0
    data_retry: float = 0.0  # > 0: on bad data, report and check again this often
    warm_trainer: bool = True
    task_poll_interval: float = 0.1
    drain_timeout: float = 120.0  # on SIGTERM/SIGINT, finish the message in progress first
    poll_interval: float = FLOWER_POLL_INTERVAL  # idle wait between polls (Flower: 3 s)
    heartbeat_interval: float = FLOWER_HEARTBEAT_INTERVAL  # Flower: 30 s

    @property
    def trainer_socket(self) -> Path:
        """Return where the warm trainer listens (inside the node's home)."""
        return self.home / "trainer.sock"


def supernode_command(opts: JoinOptions) -> list[str]:
    """Return the ``flower-supernode`` command line for ``opts``.

    It always runs through :mod:`fedfleet.client.supernode_main`, which sets the idle
    poll and heartbeat intervals (and changes nothing at Flower's defaults), so every
    device runs the same way; the command line still holds ``flower-supernode``.
    """
    node_config = opts.node.to_node_config()
    node_config += f" fedfleet-home={json.dumps(str(opts.home))}"  # final models kept here
    if opts.warm_trainer:
        node_config += f' trainer-socket="{opts.trainer_socket}"'
    cmd = [sys.executable, "-m", "fedfleet.client.supernode_main",
           "--poll-interval", f"{opts.poll_interval:g}",
           "--heartbeat-interval", f"{opts.heartbeat_interval:g}", "--",
           process.flower_executable("flower-supernode"),
           "--superlink", opts.server,
           "--node-config", node_config,
           "--port", str(opts.runtime_port)]
    if opts.insecure:
        cmd.append("--insecure")
    elif opts.root_certificates is not None:
        cmd += ["--root-certificates", str(opts.root_certificates)]
    if opts.node_key is not None:
        cmd += ["--auth-supernode-private-key", str(opts.node_key)]
    return cmd


def check_data(node: NodeData) -> str:
    """Load the device's data once, so a bad path fails before joining; describe it.

    The check runs in a short-lived ``fedfleet data`` process, so this long-lived
    one never holds the dataset or numpy.

    Raises
    ------
    DataError
        With the loader's one-line reason.
    """
    cmd = [sys.executable, "-m", "fedfleet.shared", "data", node.data_path,
           "--label-column", node.label_column, "--format", "json"]
    if node.class_names:
        cmd += ["--class-names", node.class_names]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise DataError(lines[-1].removeprefix("Error: ") if lines else
                        f"cannot load {node.data_path}")
    info = json.loads(done.stdout)
    part = (f", partition {node.partition_id} of {node.num_partitions}"
            if node.partition_id >= 0 else "")
    return (f"{info['source']}: {info['samples']} samples of shape "
            f"{tuple(info['sample_shape'])}{part}")


def wait_for_data(node: NodeData, retry: float,
                  sleep: Callable[[float], None] = time.sleep) -> str:
    """Check the data; with ``retry`` > 0, keep reporting and re-checking until it loads.

    A container whose data is broken then stays up and says why, instead of being
    restarted over and over by its restart policy.

    Raises
    ------
    DataError
        If the data is unusable and ``retry`` is 0.
    """
    while True:
        try:
            return check_data(node)
        except DataError as err:
            if retry <= 0:
                raise
            log.error("Data: %s; checking again in %.0fs (fix the data; the node joins "
                      "once it loads)", err, retry)
            sleep(retry)


def join(opts: JoinOptions) -> int:
    """Check data and server, then run the SuperNode until it exits; return its code.

    Raises
    ------
    FedfleetError
        If the data is unusable or the server does not answer within the timeout.
    """
    if (opts.poll_interval, opts.heartbeat_interval) != (FLOWER_POLL_INTERVAL,
                                                         FLOWER_HEARTBEAT_INTERVAL):
        try:
            require_version()
        except PatchError as err:
            raise FedfleetError(str(err)) from None
    log.info("Data: %s", wait_for_data(opts.node, opts.data_retry))
    tls = not opts.insecure
    log.info("Waiting for the server at %s (up to %.0fs)", opts.server,
             opts.connect_timeout)
    process.wait_healthy(opts.server, tls, opts.root_certificates, opts.connect_timeout)
    # SuperExec (started by the SuperNode) checks for new tasks every second by default.
    env = process.flower_env(opts.home, {
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(opts.task_poll_interval)})
    trainer = None
    if opts.warm_trainer:
        trainer = WorkerSupervisor(opts.trainer_socket, env)
        trainer.start()
        log.info("Warm trainer running as pid %s", trainer.pid)
    try:
        return _run_supernode(opts, env)
    finally:
        if trainer is not None:
            trainer.stop()


REFUSALS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("code: 2001",), "the server admits registered devices only: create a key with "
                   "'fedfleet node-key', have the operator register its .pub, and join "
                   "with --node-key (not --no-node-key)"),
    (("code: 2004",), "this device's key is not registered on the server: ask the operator "
                   "to run 'fedfleet nodes register <key>.pub'"),
    (("401", "register-node"), "the server refused the signed request: this device's clock is "
                          "probably ahead of the server's; enable NTP"),
    (("401", "heartbeat"), "the server no longer knows this node: it was revoked "
                      "('fedfleet nodes revoke') or the server lost its state"),
    (("CERTIFICATE_VERIFY_FAILED",), "the server's certificate does not verify: pass the CA "
                                  "that signed it with --root-certificates"),
    (("Connection reset by peer",), "the server closed the connection: it probably requires "
                                 "TLS (--root-certificates instead of --insecure)"),
)
"""Words that appear together on a line of the SuperNode's output, and what they mean
for the person at the device."""


def explain(output_tail: str) -> str | None:
    """Return the explanation for the first known refusal in ``output_tail``."""
    lines = output_tail.splitlines()
    for markers, meaning in REFUSALS:
        if any(all(m in line for m in markers) for line in lines):
            return meaning
    return None


def _run_supernode(opts: JoinOptions, env: dict[str, str]) -> int:
    child = subprocess.Popen(tethered(supernode_command(opts)), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace",
                             start_new_session=True)
    log.info("Joined %s; SuperNode running as pid %d", opts.server, child.pid)
    tail: list[str] = []
    node_id: list[str] = []  # set once the server has admitted the node
    activity = Activity(opts.home)

    def echo() -> None:  # pass the SuperNode's output through, keep the last lines
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
            del tail[:-200]
            activity.feed(line)
            if "SuperNode ID:" in line:
                node_id[:] = [line.rsplit(":", 1)[1].strip()]

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()

    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        if len(stopping) > 1 or not activity.busy:
            activity.stopping()
            child.send_signal(signum)
            return
        # Stopping the SuperNode now would lose the reply it is working on: the server
        # would wait for it until the round's deadline. Let it finish first.
        log.info("Stopping once the message in progress is answered (up to %.0fs; "
                 "signal again to stop now)", opts.drain_timeout)
        threading.Thread(target=drain, args=(signum,), daemon=True).start()

    def drain(signum: int) -> None:
        if not activity.wait_idle(opts.drain_timeout):
            log.warning("The message in progress was not answered within %.0fs; "
                        "stopping anyway", opts.drain_timeout)
        activity.stopping()
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    code = child.wait()
    reader.join(timeout=5)
    process.stop(child)
    if stopping:
        return 0
    meaning = explain("".join(tail))
    if meaning:
        raise FedfleetError(f"the server refused this device: {meaning}")
    # Flower's SuperNode leaves quietly (exit 0) when the server rejects it.
    if node_id:
        raise FedfleetError(
            f"the server ended node {node_id[0]}'s session: it was revoked ('fedfleet nodes "
            "revoke') or the server lost its state; ask the operator to register this "
            "device's key again")
    if code == 0:
        raise FedfleetError(
            "the server refused this device's signed sign-in: this device's clock is "
            "probably ahead of the server's (Flower allows 5 s); enable NTP "
            "(timedatectl set-ntp true) and check with 'fedfleet doctor'")
    raise FedfleetError(f"the SuperNode exited with code {code}; see its log above")
