"""``fedfleet models`` and ``fedfleet predict``: parse options and delegate.

Both work without TensorFlow: on a server (a run's ``models.json``) and on any
device, including one that installed only ``fedfleet-shared[predict]``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.tables import columns

HOME_OPTION = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The device's fedfleet home (the --home of 'fedfleet join') "
         "[default: ~/.fedfleet/client]")


def _pct(value: object) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) and \
        not isinstance(value, bool) else ""


def _when(value: object) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(float(value)).strftime("%Y-%m-%d %H:%M")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metrics(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(entry.get("metrics"))


def _run_models(run_dir: Path, verify: bool, format: str) -> int:
    from fedfleet.shared.recordview import RecordView, load_record
    from fedfleet.shared.registry import registry_entries, verify_entry

    try:
        record = load_record(run_dir)
    except FedfleetError:
        if not (run_dir / "models.json").exists():
            raise
        record = RecordView({})
    entries, from_file = registry_entries(run_dir, record)
    checks = [verify_entry(run_dir, e) if verify else "" for e in entries]
    if format == "json":
        click.echo(json.dumps([{**e, **({"verified": c} if verify else {})}
                               for e, c in zip(entries, checks, strict=True)], indent=1))
    else:
        if not from_file:
            click.echo(f"{run_dir} has no models.json (an older run): listed from "
                       "metrics.json, without digests", err=True)
        rows = [["final" if e.get("final") else str(e.get("round", "")), str(e.get("file")),
                 str(e.get("sha256") or "")[:16], _pct(_metrics(e).get("central_accuracy")),
                 str(len(e.get("nodes") or [])), c] for e, c in zip(entries, checks,
                                                                     strict=True)]
        header = ["round", "file", "sha256", "test acc", "devices"]
        click.echo(columns(header + (["verified"] if verify else []),
                          [r if verify else r[:-1] for r in rows]))
    return sum(c not in ("", "ok", "removed") for c in checks)


def _device_models(home: Path, verify: bool, format: str) -> int:
    from fedfleet.shared.modelstore import models_dir, read_index
    from fedfleet.shared.modelstore import verify as verify_files

    entries = read_index(home)
    checks = [verify_files(home, e) if verify else {} for e in entries]
    if format == "json":
        click.echo(json.dumps([{**e, "path": str(models_dir(home)),
                                **({"verified": c} if verify else {})}
                               for e, c in zip(entries, checks, strict=True)], indent=1))
    elif not entries:
        click.echo(f"no models in {models_dir(home)} yet: a device receives the final "
                   "model of every run it takes part in", err=True)
    else:
        click.echo(f"models in {models_dir(home)}", err=True)
        rows = []
        for e, c in zip(entries, checks, strict=True):
            files, digests = _mapping(e.get("files")), _mapping(e.get("sha256"))
            status = " ".join(f"{k} {v}" for k, v in c.items())
            rows.append([str(e.get("run_id", "")), str(e.get("round", "")),
                         _when(e.get("stored_at")),
                         _pct(_metrics(e).get("central_accuracy")),
                         str(files.get("tflite", "")), str(digests.get("tflite", ""))[:16],
                         status])
        header = ["run", "round", "stored", "test acc", "tflite", "sha256"]
        click.echo(columns(header + (["verified"] if verify else []),
                          [r if verify else r[:-1] for r in rows]))
    return sum(v != "ok" for c in checks for v in c.values())


@click.command("models")
@click.argument("run_dir", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@HOME_OPTION
@click.option("--verify", is_flag=True,
              help="Recompute every file's sha256 and compare it with the listing; "
                   "exit 1 if one is missing or differs.")
@click.option("--format", "format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def models(run_dir: Path | None, home: Path | None, verify: bool, format: str) -> None:
    """List models: a run's checkpoints, or the models this device received.

    With RUN_DIR (a server's outputs/run-<id>): every checkpoint of the run from its
    models.json, with sha256, round, test accuracy and how many devices' updates
    went into it. Without RUN_DIR: the final models this device received, stored
    under its fedfleet home as .keras and .tflite.

    \b
    Example:
        fedfleet models outputs/run-14643447820572080420 --verify
        fedfleet models --format json
    """
    from fedfleet.shared.modelstore import DEFAULT_HOME

    if run_dir is not None and home is not None:
        raise click.UsageError("give RUN_DIR (a run's models) or --home (a device's), "
                               "not both")
    bad = (_run_models(run_dir, verify, format) if run_dir is not None else
           _device_models(home or DEFAULT_HOME, verify, format))
    if bad:
        raise FedfleetError(f"{bad} file(s) failed verification: missing, their sha256 "
                            "differs from the listing, or none was recorded")


def _model_and_inputs(args: Sequence[str], home: Path) -> tuple[Path, list[str], list[str]]:
    from fedfleet.shared.modelstore import entry_for, model_path, models_dir, newest

    if args and args[0].endswith(".tflite"):
        model, inputs = Path(args[0]).expanduser(), list(args[1:])
        entry = entry_for(home, model)
    else:
        entry = newest(home)
        if entry is None:
            raise FedfleetError(f"no model in {models_dir(home)}: give a .tflite file, "
                                "or join a run to receive its final model")
        model, inputs = model_path(home, entry), list(args)
    if not inputs:
        raise click.UsageError("give at least one INPUT (image, folder of images, .csv "
                               "or .npz)")
    names = entry.get("class_names") if entry else None
    return model, inputs, [str(n) for n in names] if isinstance(names, list) else []


@click.command("predict")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL] INPUT...")
@HOME_OPTION
@click.option("--label-column", default="label", show_default=True,
              help="CSV column to leave out (the label), if present.")
@click.option("--format", "format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def predict(args: tuple[str, ...], home: Path | None, label_column: str,
            format: str) -> None:
    """Classify images, CSV rows or .npz samples with a .tflite model.

    MODEL is a .tflite file; without it, the newest model this device received
    (see 'fedfleet models'). INPUT is an image (png, jpg, bmp, gif), a folder of
    images, a .csv (one sample per row, the label column left out) or an .npz
    (array x). Prints each input's most likely class and its probability. Runs
    on LiteRT and does not need TensorFlow.

    \b
    Example:
        fedfleet predict photo.png
        fedfleet predict model.tflite rows.csv --format json
    """
    from fedfleet.shared.modelstore import DEFAULT_HOME
    from fedfleet.shared.predict import predict as run_predict

    model, inputs, names = _model_and_inputs(args, home or DEFAULT_HOME)
    results = run_predict(model, inputs, names, label_column)
    if format == "json":
        click.echo(json.dumps([r.as_dict() for r in results], indent=1))
        return
    click.echo(f"model: {model}", err=True)
    click.echo(columns(["input", "class", "probability"],
                      [[r.input, f"{r.label} ({r.name})" if r.name else str(r.label),
                        f"{r.probability:.2%}"] for r in results]))
