"""The run bundle passes Flower's own pyproject validation."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import tomllib
from flwr.common.config import validate_config

from fedfleet.server.host.fab import write_bundle
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__


def test_bundle_is_a_valid_flower_app(tmp_path: Path) -> None:
    """Flower accepts the bundle and reads back the run settings."""
    settings = RunSettings(num_rounds=4, eval_data='we"ird\\path', optimizer="sgd",
                           momentum=0.9, fedfleet_version=__version__)
    write_bundle(tmp_path, settings)
    config = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    ok, errors, _ = validate_config(config, check_module=True, project_dir=tmp_path)
    assert ok, errors
    assert config["project"]["version"] == __version__
    assert RunSettings.from_run_config(config["tool"]["flwr"]["app"]["config"]) == settings


def _entry_modules(bundle: Path) -> tuple[ModuleType, ModuleType]:
    """Import the bundle's server and client entry modules, then forget them again."""
    sys.path.insert(0, str(bundle))
    try:
        server = importlib.import_module("fedfleet_app.server_app")
        client = importlib.import_module("fedfleet_app.client_app")
    finally:
        sys.path.remove(str(bundle))
        for name in [m for m in sys.modules if m.startswith("fedfleet_app")]:
            del sys.modules[name]
    return server, client


def test_entry_modules_point_at_installed_apps(tmp_path: Path) -> None:
    """The bundle's entry modules load the installed ServerApp and ClientApp."""
    write_bundle(tmp_path, RunSettings())
    server, client = _entry_modules(tmp_path)
    from fedfleet.client.client_app import app as client_app
    from fedfleet.server.run.server_app import app as server_app

    assert server.app is server_app and client.app is client_app


def test_a_simulation_bundle_carries_the_plan_and_the_simulation_entries(
        tmp_path: Path) -> None:
    """Fedfleet simulate's bundle: valid, the plan in its run config, the sim apps."""
    from fedfleet.server.simulation import client_app as sim_client
    from fedfleet.server.simulation import server_app as sim_server
    from fedfleet.server.simulation.plan import RUN_CONFIG_KEY, SimulationPlan

    plan = SimulationPlan(devices=3, data=('/d/we"ird',), unavailable=0.5)
    settings = RunSettings(num_rounds=2, fedfleet_version=__version__)
    write_bundle(tmp_path, settings, {RUN_CONFIG_KEY: plan.to_json()})
    config = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    ok, errors, _ = validate_config(config, check_module=True, project_dir=tmp_path)
    assert ok, errors
    run_config = config["tool"]["flwr"]["app"]["config"]
    assert SimulationPlan.from_run_config(run_config) == plan
    assert RunSettings.from_run_config(run_config) == settings
    server, client = _entry_modules(tmp_path)
    assert server.app is sim_server.app and client.app is sim_client.app
