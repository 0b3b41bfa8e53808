"""Run commands: ``run`` (submit and follow), ``runs`` (list), ``status`` (one run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fedfleet.server.cli.options import (
    DIR,
    connection_options,
    control_from,
    echo_rows,
    format_option,
    run_options,
    settings_from,
)
from fedfleet.server.host.lifecycle import submit_and_follow
from fedfleet.shared.runrecord import read_record, round_line


@click.command("run")
@connection_options
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Output directory on the server host.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Print rounds until the run ends.")
@run_options
def run(server: str, insecure: bool, root_certificates: Path | None, state_dir: Path,
        output_dir: Path, follow: bool, **run_settings: Any) -> None:
    """Submit a training run to a running server.

    \b
    Example:
        fedfleet run --rounds 20 --strategy fedmedian
        docker compose exec server fedfleet run --rounds 5
    """
    control = control_from(server, insecure, root_certificates, state_dir)
    settings = settings_from(run_settings, output_dir)
    if follow:
        submit_and_follow(control, settings, state_dir, output_dir, click.echo,
                          live=sys.stdout.isatty())
    else:
        click.echo(control.submit(settings, state_dir / "bundle"))


@click.command("runs")
@connection_options
@format_option
def runs(server: str, insecure: bool, root_certificates: Path | None, state_dir: Path,
         format: str) -> None:
    """List the server's runs and their status.

    \b
    Example:
        fedfleet runs
        docker compose exec server fedfleet runs
    """
    echo_rows(control_from(server, insecure, root_certificates, state_dir).runs(), format,
               f"{'RUN ID':<22} {'STATUS':<20} {'ELAPSED':>10}  VERSION",
               lambda row: f"{row['run-id']:<22} {row['status']:<20} "
                           f"{row['elapsed']:>10}  {row['fab-version']}")


@click.command("status")
@click.argument("run_id", type=int)
@connection_options
@click.option("--output-dir", type=DIR, default=Path("outputs"), show_default=True,
              help="Output directory the run writes to.")
def status(run_id: int, server: str, insecure: bool, root_certificates: Path | None,
           state_dir: Path, output_dir: Path) -> None:
    """Show one run's status and the rounds it has finished.

    \b
    Example:
        fedfleet status 4830312951876347621
    """
    status = control_from(server, insecure, root_certificates, state_dir).run(run_id)
    details = status.get("status-details")
    click.echo(f"run {run_id}: {status['status']}{f' ({details})' if details else ''}"
               f", elapsed {status['elapsed']}")
    record = read_record(output_dir / f"run-{run_id}")
    if record is None:
        click.echo(f"no metrics in {output_dir}/run-{run_id}")
        return
    for row in record["rounds"]:
        click.echo(round_line(row, record["run"].get("num_rounds")))
    if record.get("error"):
        click.echo(f"error: {record['error']}")
