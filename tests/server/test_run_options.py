"""The run-setting options of ``fedfleet server`` / ``run`` become RunSettings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from fedfleet.server.cli.options import run_options, settings_from
from fedfleet.shared.settings import RunSettings


def _settings(args: list[str], tmp_path: Path) -> RunSettings:
    seen: list[RunSettings] = []

    @click.command()
    @run_options
    def command(**options: Any) -> None:
        seen.append(settings_from(options, tmp_path))

    result = CliRunner().invoke(command, [*args, "--input-shape", "8,8,1",
                                          "--num-classes", "10"])
    assert result.exit_code == 0, result.output
    return seen[0]


def test_the_deadline_options_reach_the_settings(tmp_path: Path) -> None:
    """--round-deadline paced and its margin, cap and the straggler count."""
    # Execute
    settings = _settings(["--round-deadline", "paced", "--round-pace-margin", "2",
                          "--round-pace-cap", "4", "--straggler-rounds", "5"], tmp_path)
    default = _settings([], tmp_path)
    # Assert
    assert (settings.round_deadline, settings.round_pace_margin, settings.round_pace_cap,
            settings.straggler_rounds) == ("paced", 2.0, 4.0, 5)
    assert (default.round_deadline, default.straggler_rounds) == ("fixed", 3)


def test_an_unknown_deadline_is_one_line(tmp_path: Path) -> None:
    """Click names the choices."""
    @click.command()
    @run_options
    def command(**options: Any) -> None:
        settings_from(options, tmp_path)

    result = CliRunner().invoke(command, ["--round-deadline", "adaptive"])
    assert result.exit_code == 2 and "'adaptive' is not one of 'fixed', 'paced'" in \
        result.output


def test_the_min_grace_reaches_the_settings_and_the_grid(tmp_path: Path) -> None:
    """--round-min-grace: devices polling every 15 s need the grace to outlast 15 s."""
    settings = _settings(["--round-min-grace", "20"], tmp_path)
    assert settings.round_min_grace == 20.0
    assert _settings([], tmp_path).round_min_grace == 10.0
    assert RunSettings.from_run_config(settings.to_run_config()).round_min_grace == 20.0


def test_the_optimizer_options_reach_the_settings(tmp_path: Path) -> None:
    """--optimizer sgd --momentum 0.9 (any case); the defaults are Adam without momentum."""
    # Execute
    settings = _settings(["--optimizer", "SGD", "--momentum", "0.9",
                          "--learning-rate", "0.05"], tmp_path)
    default = _settings([], tmp_path)
    # Assert
    assert (settings.optimizer, settings.momentum, settings.learning_rate) == (
        "sgd", 0.9, 0.05)
    assert (default.optimizer, default.momentum) == ("adam", 0.0)
    assert RunSettings.from_run_config(settings.to_run_config()) == settings


def test_the_optimizer_options_are_in_the_help() -> None:
    """The help of fedfleet run / server lists both options with their defaults."""
    @click.command()
    @run_options
    def command(**options: Any) -> None:
        pass

    result = CliRunner().invoke(command, ["--help"])
    text = " ".join(result.output.split())
    assert "--optimizer [adam|sgd]" in text and "[default: adam]" in text
    assert "--momentum FLOAT RANGE" in text and "sgd only" in text
