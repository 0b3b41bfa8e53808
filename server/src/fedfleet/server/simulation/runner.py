"""``fedfleet simulate`` from start to stop: a simulation SuperLink, one run, its end.

Start a SuperLink with ``--simulation`` (insecure, on 127.0.0.1 and a free port, its
state in ``--state-dir``), submit the run as a simulation bundle with the plan in its
run config and Flower's simulation settings (virtual devices, CPUs and GPUs per
device) as its federation config, follow it exactly as ``fedfleet run`` does, say
which Ray nodes did the work (from ``simulation.json``), and stop the SuperLink on
every way out. The SuperLink's environment sizes TensorFlow's
thread pools and, with ``ray_address``, points Flower's ``ray.init()`` at a cluster
(``RAY_ADDRESS``); ``flwr-simulation`` and a local Ray's workers inherit it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedfleet.server.host.control import Control, Simulation
from fedfleet.server.host.lifecycle import submit_and_follow
from fedfleet.server.host.superlink import ServerOptions, start_superlink
from fedfleet.server.simulation.availability import ray_nodes_line
from fedfleet.server.simulation.plan import RUN_CONFIG_KEY, SimulationPlan
from fedfleet.shared import process
from fedfleet.shared.errors import ConfigError, FedfleetError
from fedfleet.shared.settings import RunSettings

Echo = Callable[[str], None]

FINISH_TIMEOUT = 120.0
"""Seconds to wait after the last round for the simulation process to shut Ray down."""

EXTRA_HINT = ("fedfleet simulate needs the simulation extra: "
              "pip install 'fedfleet-server[simulation]'")


@dataclass(frozen=True)
class SimulateRequest:
    """What ``fedfleet simulate`` was asked to do."""

    plan: SimulationPlan
    settings: RunSettings
    output_dir: Path
    state_dir: Path = Path("fedfleet-sim-state")
    ray_address: str | None = None
    live: bool = False
    startup_timeout: float = 120.0


def check_installed() -> None:
    """Fail with one line when the simulation extra (Ray, the client) is missing.

    Raises
    ------
    FedfleetError
        Naming ``pip install 'fedfleet-server[simulation]'``.
    """
    for module in ("ray", "fedfleet.client"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise FedfleetError(EXTRA_HINT)


def check_request(plan: SimulationPlan, settings: RunSettings) -> None:
    """Reject what would only fail mid-run.

    The shared data must load and split into ``devices`` partitions, and enough
    devices must be online in every round.

    Raises
    ------
    FedfleetError
        If the shared data does not load or cannot be split into ``devices``
        partitions, or ``--min-clients`` exceeds the devices (online in a round).
    """
    if settings.min_clients > plan.devices:
        raise ConfigError(f"--min-clients {settings.min_clients} is more than the "
                          f"{plan.devices} virtual devices; lower it or add devices")
    if not plan.per_device:  # every device's partition must exist: fail before Ray
        from fedfleet.shared.data import load_dataset, partition

        names = [n.strip() for n in plan.class_names.split(",") if n.strip()] or None
        data = load_dataset(plan.data[0], label_column=plan.label_column,
                            class_names=names)
        partition(data.y, 0, plan.devices, settings.partitioning,
                  settings.dirichlet_alpha, settings.data_seed)
    if plan.has_churn:
        rnd, online = plan.fewest_online(settings.num_rounds)
        if online < settings.min_clients:
            raise ConfigError(
                f"only {online} of {plan.devices} virtual devices are online in round "
                f"{rnd}, fewer than --min-clients {settings.min_clients}; lower "
                "--min-clients or --unavailable, or change the availability trace")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def simulation_env(plan: SimulationPlan, ray_address: str | None) -> dict[str, str]:
    """Return the SuperLink's extra environment: thread pools, Ray's address."""
    threads = str(plan.cpus)
    env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
           "OMP_NUM_THREADS": threads, "RAY_DEDUP_LOGS": "0"}
    # Flower calls ray.init() without an address: Ray then joins RAY_ADDRESS, else the
    # cluster a `ray start` on this host left in /tmp/ray/ray_current_cluster, else
    # starts a private one. "local" makes the last explicit: a cluster is used only
    # when asked for.
    env["RAY_ADDRESS"] = ray_address or os.environ.get("RAY_ADDRESS") or "local"
    return env


def submission(plan: SimulationPlan) -> Simulation:
    """Return the run-config and federation-config entries of a simulation run."""
    federation: dict[str, bool | int | float | str] = {
        "num-supernodes": plan.devices,
        "client-resources-num-cpus": int(plan.cpus),  # an integer in Flower 1.42
        "client-resources-num-gpus": float(plan.gpus),
    }
    return Simulation(run_config={RUN_CONFIG_KEY: plan.to_json()},
                      federation_config=federation)


def wait_finished(control: Control, run_id: int, alive: Callable[[], bool],
                  timeout: float = FINISH_TIMEOUT) -> None:
    """Wait until ``flwr-simulation`` has ended the run (Ray shut down), bounded.

    The record says "completed" when the ServerApp is done; the simulation process
    then stops its actors and Ray, and stopping the SuperLink before that leaves
    Ray's agents behind.
    """
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        try:
            if str(control.run(run_id).get("status", "")).startswith("finished"):
                return
        except FedfleetError:
            return
        time.sleep(2.0)


def reap_group(pgid: int) -> None:
    """Kill what is left of the SuperLink's process group (Ray's agents ignore SIGTERM)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def simulate(request: SimulateRequest, echo: Echo) -> None:
    """Run one simulation to its end and print it as ``fedfleet run`` does.

    Raises
    ------
    FedfleetError
        If the extra is missing, the SuperLink does not start, or the run fails.
    """
    check_installed()
    check_request(request.plan, request.settings)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    options = ServerOptions(host="127.0.0.1", port=free_port(),
                            state_dir=request.state_dir, insecure=True,
                            startup_timeout=request.startup_timeout, simulation=True,
                            env=simulation_env(request.plan, request.ray_address))
    superlink = start_superlink(options)
    try:
        echo(f"Simulating {request.plan.devices} virtual devices "
             f"({request.plan.cpus} CPU each) on Flower's simulation engine; "
             f"SuperLink log: {request.state_dir / 'superlink.log'}")
        control = options.control()
        run_id = submit_and_follow(control, request.settings, request.state_dir,
                                   request.output_dir, echo,
                                   alive=lambda: superlink.poll() is None,
                                   live=request.live, simulation=submission(request.plan))
        wait_finished(control, run_id, alive=lambda: superlink.poll() is None)
        placed = ray_nodes_line(request.output_dir / f"run-{run_id}")
        if placed:
            echo(placed)
    except KeyboardInterrupt:
        echo("Stopping.")
        raise FedfleetError("stopped before the simulation finished") from None
    finally:
        process.stop(superlink)
        reap_group(superlink.pid)
