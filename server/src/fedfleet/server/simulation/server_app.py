"""The simulation's ServerApp: fedfleet's ServerApp on a grid that knows availability.

Everything a real run does (settings, strategy, reply intake, compression, run
folder, metrics, plots, report, model registry) is
:func:`fedfleet.server.run.server_app.main`; this entry only reads the simulation's plan
from the run config and wraps Flower's simulation grid in
:class:`~fedfleet.server.simulation.availability.AvailabilityGrid`.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedfleet.server.run import server_app as fleet_server_app
from fedfleet.server.simulation.availability import AvailabilityGrid
from fedfleet.server.simulation.plan import SimulationPlan
from fedfleet.shared.settings import RunSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run fedfleet's ServerApp with the plan's offline devices left out of each round."""
    plan = SimulationPlan.from_run_config(context.run_config)
    settings = RunSettings.from_run_config(context.run_config)
    directory = (Path(settings.output_dir) / f"run-{context.run_id}"
                 if settings.output_dir else None)
    fleet_server_app.main(AvailabilityGrid(grid, plan, directory), context)
