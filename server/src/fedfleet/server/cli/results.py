"""``fedfleet report`` and ``fedfleet export``: what a run produced. Parsing only."""

from __future__ import annotations

import time
from pathlib import Path

import click

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("report")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--tensorboard", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Also write the run's rounds as TensorBoard event files into this "
                   "folder (view with: tensorboard --logdir DIR).")
def report(run_dir: Path, tensorboard: Path | None) -> None:
    """Draw a run's plots and write its HTML report; print the report's path.

    RUN_DIR is a run's output folder (outputs/run-<id>). Writes RUN_DIR/plots/*.png
    (accuracy and loss per round, accuracy and training time per device, replies
    per round) and RUN_DIR/report.html (plots, settings, per-round table,
    failures and rejections, models). The page links its plots relatively, so
    the folder can be copied as it is. Works on a running run too.

    \b
    Example:
        fedfleet report outputs/run-14643447820572080420
        xdg-open outputs/run-14643447820572080420/report.html
    """
    from fedfleet.server.results.plots import write_plots
    from fedfleet.server.results.report import write_report
    from fedfleet.shared.recordview import load_record

    record = load_record(run_dir)
    started = time.perf_counter()
    plots = write_plots(run_dir, record)
    page = write_report(run_dir, record, plots)
    click.echo(f"{len(plots)} plots in {run_dir / 'plots'} "
               f"({time.perf_counter() - started:.1f}s)", err=True)
    if tensorboard is not None:
        from fedfleet.server.results.tensorboard import TensorBoardLog

        with TensorBoardLog(tensorboard) as log:
            rounds = log.write_record(record)
        click.echo(f"{rounds} rounds written to {tensorboard} "
                   f"(tensorboard --logdir {tensorboard})", err=True)
    click.echo(str(page))


@click.command("export")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--round", "round", type=click.IntRange(min=0), default=None,
              help="Export this round's checkpoint [default: the final model]")
@click.option("--format", "format", type=click.Choice(["keras", "savedmodel", "tflite"]),
              required=True, help="keras: a .keras file; savedmodel: a TensorFlow "
                                  "SavedModel folder; tflite: a LiteRT model for devices.")
@click.option("--quantize", type=click.Choice(["none", "float16", "int8"]),
              default="none", show_default=True,
              help="tflite only: float16 weights (half the size), or int8 weights and "
                   "activations (a quarter), calibrated on the evaluation data.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write [default: RUN_DIR/exports/round-NNN[-QUANT].EXT]")
@click.option("--data", default=None,
              help="Test data to verify (and calibrate int8) with [default: the run's "
                   "eval-data, e.g. builtin:digits]")
def export(run_dir: Path, round: int | None, format: str, quantize: str,
           out: Path | None, data: str | None) -> None:
    """Export a run's model for deployment, verified against the Keras model.

    The exported model runs on the test set (up to 2000 samples) next to the
    Keras checkpoint; the command prints the largest difference between their
    class probabilities and both accuracies, and writes the file only if they
    agree: max difference <= 1e-6 (keras), <= 1e-4 (savedmodel, tflite),
    <= 1e-2 (tflite float16); for int8, test accuracy within 2 percentage points
    of Keras. Otherwise it refuses with one line and writes nothing.

    \b
    Example:
        fedfleet export outputs/run-14643447820572080420 --format tflite
        fedfleet export outputs/run-14643447820572080420 --format tflite \\
            --quantize int8 --out model-int8.tflite
    """
    from fedfleet.server.results.export import check_choice, export_model
    from fedfleet.shared.recordview import load_record

    check_choice(format, quantize)
    record = load_record(run_dir)
    result = export_model(run_dir, record, format, quantize, round, out, data)
    rows = [["format", "quantize", "size", "max diff", "keras acc", "exported acc",
             "samples"],
            [result.format, result.quantize, _size(result.bytes), f"{result.max_diff:.2g}",
             f"{result.keras_accuracy:.2%}", f"{result.exported_accuracy:.2%}",
             str(result.samples)]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    which = f"round {result.server_round}" if result.server_round is not None else "final"
    click.echo(f"wrote {result.path} ({which} model, verified on {result.data}: "
               f"{result.criterion})")


def _size(num: int) -> str:
    if num < 1000:
        return f"{num} B"
    return f"{num / 1000:.1f} kB" if num < 1_000_000 else f"{num / 1e6:.1f} MB"
