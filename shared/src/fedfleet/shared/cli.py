"""The ``fedfleet`` command group; server and client packages plug their commands in."""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from typing import Any

import click

from fedfleet.shared.constants import DEFAULT_DATASET
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.version import __version__

COMMANDS_GROUP = "fedfleet.commands"
"""Entry-point group: each installed fedfleet package registers its commands here."""


class FedfleetGroup(click.Group):
    """A click group that loads plugged-in commands and shows fedfleet errors as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """List built-in and plugged-in commands."""
        plugged = [ep.name for ep in entry_points(group=COMMANDS_GROUP)]
        return sorted({*super().list_commands(ctx), *plugged})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return a built-in command or load a plugged-in one."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for ep in entry_points(group=COMMANDS_GROUP, name=cmd_name):
            loaded = ep.load()
            if isinstance(loaded, click.Command):
                return loaded
        return None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Explain which package to install when a known command is missing."""
        name = args[0] if args else None
        hint = MISSING_HINTS.get(name or "")
        if hint and self.get_command(ctx, name or "") is None:
            raise click.UsageError(f"'fedfleet {name}' is not installed here: {hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a FedfleetError becomes ``Error: <message>`` and exit 1."""
        try:
            return super().invoke(ctx)
        except FedfleetError as err:
            raise click.ClickException(str(err)) from None


MISSING_HINTS = {
    "server": "install the server package (pip install fedfleet-server)",
    "run": "install the server package (pip install fedfleet-server)",
    "runs": "install the server package (pip install fedfleet-server)",
    "status": "install the server package (pip install fedfleet-server)",
    "join": "install the client package (pip install fedfleet-client)",
    "report": "install the server package (pip install fedfleet-server)",
    "export": "install the server package (pip install fedfleet-server)",
    "simulate": "install the server package with its simulation extra "
                "(pip install 'fedfleet-server[simulation]')",
}


@click.group(
    cls=FedfleetGroup,
    context_settings={"help_option_names": ["-h", "--help"],
                      "auto_envvar_prefix": "FEDFLEET"},
)
@click.version_option(__version__, prog_name="fedfleet")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def cli(verbose: bool) -> None:
    """Federated learning of a Keras model across a fleet of edge devices.

    The server side (fedfleet-server) coordinates rounds; every device runs the
    client side (fedfleet-client) and keeps its data. Each option can also be set
    through an environment variable FEDFLEET_<COMMAND>_<OPTION>, e.g.
    FEDFLEET_JOIN_SERVER.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


@cli.command("data")
@click.argument("path", default=DEFAULT_DATASET)
@click.option("--label-column", default="label", show_default=True,
              help="CSV column holding the labels.")
@click.option("--class-names", default="",
              help="Comma-separated label order, for folder or text labels.")
@click.option("--format", "format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def data_command(path: str, label_column: str, class_names: str, format: str) -> None:
    """Check that a dataset loads, and show its size, shape and classes.

    PATH is a folder of class subfolders, a .csv file, an .npz file or
    builtin:NAME (default: builtin:digits).

    \b
    Example:
        fedfleet data /data/images
    """
    import numpy as np

    from fedfleet.shared.data import load_dataset

    names = [n.strip() for n in class_names.split(",") if n.strip()] or None
    data = load_dataset(path, label_column=label_column, class_names=names)
    classes, counts = np.unique(data.y, return_counts=True)
    per_class = {int(c): int(n) for c, n in zip(classes, counts, strict=True)}
    summary = {"source": data.source, "samples": len(data),
               "sample_shape": list(data.sample_shape), "classes": per_class}
    if format == "json":
        click.echo(json.dumps(summary))
        return
    click.echo(f"{data.source}: {len(data)} samples of shape {data.sample_shape}, "
               f"{len(classes)} classes")
    click.echo("per class: " + ", ".join(f"{c}={n}" for c, n in per_class.items()))


def main() -> None:
    """Entry point of the ``fedfleet`` script."""
    cli()
