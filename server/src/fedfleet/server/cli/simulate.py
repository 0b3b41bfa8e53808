"""``fedfleet simulate``: parse its options, then :func:`~.simulation.runner.simulate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fedfleet.server.cli.options import DIR, FILE, run_options, settings_from
from fedfleet.shared.constants import DEFAULT_DATASET
from fedfleet.shared.errors import ConfigError


def device_entries(directory: Path) -> list[str]:
    """Return the data of each device in ``directory``: its entries, sorted, no dotfiles.

    Raises
    ------
    ConfigError
        If the folder has no entry.
    """
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    if not entries:
        raise ConfigError(f"--device-data {directory} has no entries: put one file or "
                          "folder per virtual device in it")
    return [str(p.resolve()) for p in entries]


@click.command("simulate")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Virtual devices; each holds partition i of N of --data  "
                   "[default: 10, or the entries of --device-data]")
@click.option("--data", default=DEFAULT_DATASET, show_default=True,
              help="Dataset the virtual devices share out (--partitioning, "
                   "--dirichlet-alpha, --data-seed).")
@click.option("--device-data", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None,
              help="Folder with one entry (file or folder) per virtual device: each "
                   "holds its whole entry, no partitioning.")
@click.option("--label-column", default="label", show_default=True,
              help="CSV column holding the labels.")
@click.option("--class-names", default="",
              help="Comma-separated label order, for folder or text labels.")
@click.option("--cpus-per-device", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="CPUs Ray reserves per virtual device (devices trained at once = "
                   "CPUs / this; a whole number in Flower 1.42); also the TensorFlow "
                   "threads of each.")
@click.option("--gpus-per-device", type=click.FloatRange(min=0), default=0.0,
              show_default=True, help="GPUs (or a share of one) per virtual device.")
@click.option("--unavailable", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Share of the virtual devices offline in each round (drawn anew "
                   "each round with --data-seed); offline devices are not sampled.")
@click.option("--availability", type=FILE, default=None,
              help="Per-device, per-round availability trace (.csv or .json; see "
                   "docs/simulation.md); offline devices are not sampled.")
@click.option("--ray-address", default=None, envvar=["FEDFLEET_SIMULATE_RAY_ADDRESS",
                                                     "RAY_ADDRESS"],
              help="Run on an existing Ray cluster (ray start --head) at HOST:PORT "
                   "[default: $RAY_ADDRESS, else a local Ray]")
@click.option("--state-dir", type=DIR, default=Path("fedfleet-sim-state"),
              show_default=True, help="The simulation SuperLink's database and log.")
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Where the run writes run-<id>/, as a real run does.")
@run_options
def simulate(devices: int | None, data: str, device_data: Path | None,
             label_column: str, class_names: str, cpus_per_device: int,
             gpus_per_device: float, unavailable: float, availability: Path | None,
             ray_address: str | None, state_dir: Path, output_dir: Path,
             **run_settings: Any) -> None:
    """Try a run on virtual devices: fedfleet's apps on Flower's simulation engine.

    The same ServerApp and ClientApp as a real fleet (settings, strategies, reply
    intake, compression, run folder, metrics, plots, report, models), with N virtual
    devices on Ray, on this machine or a cluster. Each holds partition i of N of --data
    (--partitioning iid|dirichlet), or one entry of --device-data. --unavailable and
    --availability take devices offline to show a strategy under churn. Needs
    pip install 'fedfleet-server[simulation]'.

    \b
    Example:
        fedfleet simulate --devices 100 --fraction-train 0.1 --rounds 30 \\
            --partitioning iid
        fedfleet simulate --devices 30 --partitioning dirichlet \\
            --dirichlet-alpha 0.3 --unavailable 0.2
        fedfleet simulate --device-data hospitals/ --availability trace.csv
        fedfleet report outputs/run-<id>

    The built-in digits (1437 images) split into at most ~40 devices at
    --dirichlet-alpha 0.3; for more, bring more data (--data builtin:mnist
    --eval-data builtin:mnist). See docs/simulation.md.
    """
    from fedfleet.server.simulation.plan import SimulationPlan, read_availability
    from fedfleet.server.simulation.runner import SimulateRequest, check_installed, simulate

    check_installed()
    if device_data is not None:
        paths = device_entries(device_data)
        if devices is not None and devices != len(paths):
            raise click.UsageError(f"--devices {devices} but --device-data {device_data} "
                                   f"has {len(paths)} entries (one per device); drop "
                                   "--devices")
        devices = len(paths)
    else:
        paths = [data]
    count = 10 if devices is None else devices
    settings = settings_from(run_settings, output_dir)
    plan = SimulationPlan(
        devices=count, data=tuple(paths), per_device=device_data is not None,
        label_column=label_column, class_names=class_names, cpus=cpus_per_device,
        gpus=gpus_per_device, unavailable=unavailable,
        availability=read_availability(availability) if availability else {},
        seed=settings.data_seed)
    simulate(SimulateRequest(plan, settings, output_dir, state_dir=state_dir,
                             ray_address=ray_address, live=sys.stdout.isatty()),
             echo=click.echo)
