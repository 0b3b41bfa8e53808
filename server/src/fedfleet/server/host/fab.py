"""The Flower App Bundle (FAB) that ``flwr run`` ships for a fedfleet run.

The bundle is deliberately thin: a ``pyproject.toml`` with the run settings and two
one-line entry modules that point at the installed ``fedfleet.server`` and
``fedfleet.client`` packages. Code therefore comes from what each side installed,
and the ``fedfleet-version`` setting lets clients refuse a server of another release.

A simulation bundle (``fedfleet simulate``) points at the simulation entry points
instead (:mod:`fedfleet.server.simulation`), which wrap the same ServerApp and
ClientApp, and carries the simulation's plan as one more run-config entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.settings import RunSettings, Scalar
from fedfleet.shared.version import __version__

ENTRY_MODULES = {
    "server_app.py": (
        '"""FAB entry point: the ServerApp installed with fedfleet-server."""\n\n'
        "from fedfleet.server.run import server_app as _installed\n\n"
        "app = _installed.app\n"
    ),
    "client_app.py": (
        '"""FAB entry point: the ClientApp installed with fedfleet-client."""\n\n'
        "from fedfleet.client import client_app as _installed\n\n"
        "app = _installed.app\n"
    ),
}

SIMULATION_ENTRY_MODULES = {
    "server_app.py": (
        '"""FAB entry point: the fedfleet ServerApp on the simulation engine."""\n\n'
        "from fedfleet.server.simulation import server_app as _installed\n\n"
        "app = _installed.app\n"
    ),
    "client_app.py": (
        '"""FAB entry point: the fedfleet ClientApp as a virtual device."""\n\n'
        "from fedfleet.server.simulation import client_app as _installed\n\n"
        "app = _installed.app\n"
    ),
}


def toml_value(value: Scalar) -> str:
    """Render a run-config scalar as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def pyproject(settings: RunSettings, extra: Mapping[str, Scalar] | None = None) -> str:
    """Return the bundle's ``pyproject.toml``: ``settings`` (and ``extra``) as run config."""
    entries = {**settings.to_run_config(), **(extra or {})}
    config = "\n".join(f"{key} = {toml_value(value)}" for key, value in entries.items())
    return f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedfleet"
version = "{__version__}"
description = "fedfleet training run"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedfleet"

[tool.flwr.app.components]
serverapp = "fedfleet_app.server_app:app"
clientapp = "fedfleet_app.client_app:app"

[tool.flwr.app.config]
{config}
"""


def write_bundle(directory: Path, settings: RunSettings,
                 simulation: Mapping[str, Scalar] | None = None) -> Path:
    """Write the bundle's files into ``directory`` (replacing old ones); return it.

    With ``simulation`` (run-config entries of the simulation's plan) the bundle is a
    simulation bundle: its components are :mod:`fedfleet.server.simulation`'s.
    """
    package = directory / "fedfleet_app"
    package.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / "pyproject.toml", pyproject(settings, simulation))
    write_atomic(package / "__init__.py", '"""fedfleet run bundle."""\n')
    modules = ENTRY_MODULES if simulation is None else SIMULATION_ENTRY_MODULES
    for name, text in modules.items():
        write_atomic(package / name, text)
    return directory
