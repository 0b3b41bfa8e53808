"""The run bundle passes Flower's own pyproject validation."""

from __future__ import annotations

from pathlib import Path

import tomllib
from flwr.common.config import validate_config

from fedfleet.server.fab import write_bundle
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


def test_entry_modules_point_at_installed_apps(tmp_path: Path) -> None:
    """The bundle's entry modules load the installed ServerApp and ClientApp."""
    import importlib
    import sys

    write_bundle(tmp_path, RunSettings())
    sys.path.insert(0, str(tmp_path))
    try:
        server = importlib.import_module("fedfleet_app.server_app")
        client = importlib.import_module("fedfleet_app.client_app")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("fedfleet_app")]:
            del sys.modules[name]
    from fedfleet.client.client_app import app as client_app
    from fedfleet.server.server_app import app as server_app

    assert server.app is server_app and client.app is client_app
