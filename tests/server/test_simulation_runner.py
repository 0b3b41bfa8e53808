"""``fedfleet simulate``'s start-up, before any Ray process.

The SuperLink's command and environment, the federation config, and the checks that
fail before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfleet.server.host.superlink import ServerOptions, superlink_command
from fedfleet.server.simulation.plan import SimulationPlan
from fedfleet.server.simulation.runner import check_request, simulation_env, submission
from fedfleet.shared.errors import ConfigError, DataError
from fedfleet.shared.settings import RunSettings

PLAN = SimulationPlan(devices=8, data=("builtin:digits",), cpus=2, gpus=0.25)


def test_the_superlink_runs_in_simulation_mode() -> None:
    """--simulation is added to the same SuperLink command a server uses."""
    options = ServerOptions(port=9999, state_dir=Path("s"), simulation=True)
    cmd = superlink_command(options)
    assert "--simulation" in cmd and "--insecure" in cmd
    assert cmd[cmd.index("--port") + 1] == "9999"
    assert "--simulation" not in superlink_command(ServerOptions())


def test_the_environment_sizes_threads_and_keeps_ray_private(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads per device; Ray local unless --ray-address or RAY_ADDRESS name a cluster."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = simulation_env(PLAN, None)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "2"
    assert env["OMP_NUM_THREADS"] == "2" and env["RAY_ADDRESS"] == "local"
    assert simulation_env(PLAN, "head:6379")["RAY_ADDRESS"] == "head:6379"
    monkeypatch.setenv("RAY_ADDRESS", "other:6379")
    assert simulation_env(PLAN, None)["RAY_ADDRESS"] == "other:6379"
    assert simulation_env(PLAN, "head:6379")["RAY_ADDRESS"] == "head:6379"


def test_the_federation_config_has_the_devices_and_their_resources() -> None:
    """Flower's simulation settings for the run, and the plan for the apps."""
    sim = submission(PLAN)
    assert sim.federation_config == {"num-supernodes": 8, "client-resources-num-cpus": 2,
                                     "client-resources-num-gpus": 0.25}
    assert SimulationPlan.from_run_config(sim.run_config) == PLAN


@pytest.mark.parametrize(("plan", "settings", "error", "message"), [
    (SimulationPlan(devices=3, data=("builtin:digits",)), RunSettings(min_clients=4),
     ConfigError, "--min-clients 4 is more than the 3 virtual devices"),
    (SimulationPlan(devices=100, data=("builtin:digits",)),
     RunSettings(partitioning="dirichlet", dirichlet_alpha=0.3), ConfigError,
     "raise dirichlet-alpha or use fewer partitions"),
    (SimulationPlan(devices=4, data=("/no/such.npz",)), RunSettings(), DataError,
     "does not exist"),
    (SimulationPlan(devices=4, data=("builtin:digits",), availability={
        0: (True, False), 1: (True, False), 2: (True, False)}),
     RunSettings(min_clients=2, num_rounds=3), ConfigError,
     "only 1 of 4 virtual devices are online in round 2"),
])
def test_what_would_fail_mid_run_fails_first(plan: SimulationPlan, settings: RunSettings,
                                             error: type[Exception], message: str) -> None:
    """Data, partitions and availability are checked before a SuperLink starts."""
    with pytest.raises(error, match=message):
        check_request(plan, settings)


def test_a_feasible_request_passes() -> None:
    """100 IID devices on the digits, some offline: fine with --min-clients 2."""
    check_request(SimulationPlan(devices=100, data=("builtin:digits",), unavailable=0.5),
                  RunSettings(partitioning="iid", min_clients=2))
