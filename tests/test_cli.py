"""The fedfleet command group: help everywhere, one-line errors, README coverage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from ports import free_port

from fedfleet.shared.cli import cli

ROOT = Path(__file__).parents[1]
COMMANDS = ["certs", "data", "doctor", "export", "fleet", "join", "models", "node-key",
            "nodes", "predict", "report", "run", "runs", "secrets", "server", "simulate",
            "status"]


def test_all_commands_are_plugged_in() -> None:
    """Server and client packages register their commands with the group."""
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == COMMANDS  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    """--help works and shows an example invocation."""
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and f"fedfleet {name}" in result.output


def _commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli)
    found = []
    for name in COMMANDS:
        command = cli.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None
        subs = getattr(command, "commands", {})
        found += [(f"{name}_{sub}", c) for sub, c in subs.items()] or [(name, command)]
    return found


@pytest.mark.parametrize(("path", "command"), _commands())
def test_every_option_reads_the_documented_environment_variable(
        path: str, command: click.Command) -> None:
    """--some-option of 'fedfleet cmd' is FEDFLEET_CMD_SOME_OPTION, as the group's help says."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            flag = max(param.opts, key=len).lstrip("-").replace("-", "_")
            assert param.name == flag, f"{path}: {param.opts} reads " \
                f"FEDFLEET_{path.upper()}_{str(param.name).upper()}"


@pytest.mark.parametrize(("path", "command"), [c for c in _commands() if "_" in c[0]])
def test_every_subcommand_has_help_with_an_example(path: str, command: click.Command) -> None:
    """'fedfleet nodes register --help', 'fedfleet fleet deploy --help', ... show an example."""
    group, sub = path.split("_", 1)
    result = CliRunner().invoke(cli, [group, sub, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and f"fedfleet {group} {sub}" in result.output


def test_an_environment_variable_sets_a_run_option() -> None:
    """FEDFLEET_SERVER_ROUNDS reaches --rounds (compose relies on it)."""
    result = CliRunner().invoke(cli, ["server", "--insecure"],
                                env={"FEDFLEET_SERVER_ROUNDS": "0"})
    assert result.exit_code == 2
    assert "Invalid value for '--rounds'" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_documents_every_command(name: str) -> None:
    """Each command appears in the README."""
    assert re.search(rf"fedfleet {name}\b", (ROOT / "README.md").read_text())




@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["join", "--partition", "3/3", "--insecure"], "0 <= I < N"),
        (["join", "--server", "http://x:8000"], "without a scheme"),
        (["join", "--data", "/no/such/dir", "--insecure"], "does not exist"),
        (["server", "--tls-dir", "/no/such/tls"], "TLS is on by default, and /no/such/tls/ca.crt"),
        (["join", "--node-key", "/no/such/key"], "no node key at /no/such/key: create one"),
        (["nodes", "register", "/no/such.pub"], "/no/such.pub does not exist"),
        (["server", "--insecure", "--strategy-param", "foo=1"],
         "fedavg has no parameter 'foo'"),
        (["server", "--insecure", "--model", "nomodule_q:build"],
         "cannot import model module"),
        (["server", "--insecure", "--eval-data", "builtin:nope"], "unknown built-in"),
        (["data", "/no/such.csv"], "does not exist"),
        (["server", "--insecure", "--node-auth"], "--node-auth needs TLS"),
        (["server", "--insecure", "--momentum", "0.9"],
         "Error: momentum 0.9 needs optimizer sgd (Adam has no momentum setting): set "
         "optimizer sgd, or momentum 0"),
        (["run", "--insecure", "--optimizer", "rmsprop"],
         "'rmsprop' is not one of 'adam', 'sgd'"),
        (["run", "--insecure", "--optimizer", "sgd", "--momentum", "1"],
         "Invalid value for '--momentum'"),
        (["simulate", "--devices", "0"], "Invalid value for '--devices'"),
        (["simulate", "--fraction-train", "1.5"], "Invalid value for '--fraction-train'"),
        (["simulate", "--fraction-train", "0"], "Invalid value for '--fraction-train'"),
        (["simulate", "--unavailable", "1"], "Invalid value for '--unavailable'"),
        (["simulate", "--cpus-per-device", "0.5"], "Invalid value for '--cpus-per-device'"),
        (["simulate", "--devices", "3", "--min-clients", "5"],
         "--min-clients 5 is more than the 3 virtual devices"),
        (["simulate", "--devices", "100", "--partitioning", "dirichlet",
          "--dirichlet-alpha", "0.3"], "raise dirichlet-alpha or use fewer partitions"),
        (["simulate", "--devices", "10", "--unavailable", "0.9", "--min-clients", "2"],
         "only 1 of 10 virtual devices are online in round 1"),
        (["simulate", "--data", "/no/such.csv"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: list[str], message: str) -> None:
    """Wrong flags and bad values end in a message, never a traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception


def test_join_gives_up_on_an_unreachable_server() -> None:
    """No server at the address: a bounded wait, then one line."""
    port = free_port()
    result = CliRunner().invoke(cli, ["join", "--insecure", "--server",
                                      f"127.0.0.1:{port}", "--connect-timeout", "1"])
    assert result.exit_code == 1
    assert f"no fedfleet server answers at 127.0.0.1:{port} after 1s" in result.output


def test_options_come_from_environment_variables() -> None:
    """FEDFLEET_<COMMAND>_<OPTION> sets an option (how compose configures us)."""
    result = CliRunner().invoke(cli, ["join"], env={"FEDFLEET_JOIN_PARTITION": "5/2"})
    assert result.exit_code == 2 and "'5/2' is not I/N" in result.output


def test_data_command_reports_json() -> None:
    """'fedfleet data' summarises a dataset for scripts."""
    result = CliRunner().invoke(cli, ["data", "builtin:digits", "--format", "json"])
    summary = json.loads(result.output)
    assert summary["samples"] == 1437 and summary["sample_shape"] == [8, 8, 1]
    assert len(summary["classes"]) == 10


def test_simulate_refuses_an_empty_device_data_folder(tmp_path: Path) -> None:
    """--device-data with no entries: one line, before anything starts."""
    (tmp_path / ".hidden").write_text("not a device")
    result = CliRunner().invoke(cli, ["simulate", "--device-data", str(tmp_path)])
    assert result.exit_code == 1 and result.exception is None or \
        isinstance(result.exception, SystemExit)
    assert f"--device-data {tmp_path} has no entries" in result.output
    assert "Traceback" not in result.output


def test_simulate_refuses_devices_that_disagree_with_device_data(tmp_path: Path) -> None:
    """N comes from the folder: --devices may not say otherwise."""
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("label,x\n0,1\n")
    result = CliRunner().invoke(cli, ["simulate", "--device-data", str(tmp_path),
                                      "--devices", "3"])
    assert result.exit_code == 2 and "has 2 entries (one per device)" in result.output


def test_simulate_refuses_a_malformed_availability_file(tmp_path: Path) -> None:
    """A trace that cannot be read is named with what is wrong, in one line."""
    trace = tmp_path / "trace.csv"
    trace.write_text("device,1,2\n0,1,yes\n")
    result = CliRunner().invoke(cli, ["simulate", "--devices", "4", "--availability",
                                      str(trace)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: availability file {trace}: line 2, round 2: "
                                     "'yes' is not 1 (online) or 0 (offline)")


def test_simulate_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """No Ray (or no client package) here: one line naming the extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    result = CliRunner().invoke(cli, ["simulate", "--devices", "4"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: fedfleet simulate needs the simulation "
                                     "extra: pip install 'fedfleet-server[simulation]'")
