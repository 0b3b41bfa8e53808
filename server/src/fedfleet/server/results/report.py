"""One self-contained HTML page per run: ``RUN_DIR/report.html``.

The page references its plots relatively (``plots/*.png``), has no scripts and no
external resources, so the run folder can be copied or served as it is. Besides
the rounds, failures and models it lists every device with the rounds it was asked in
and contributed to. Everything
from the record is HTML-escaped: error texts and metric names come from devices.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedfleet.server.results.plots import PLOT_FILES, PLOTS_DIR
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.metrics import CATALOG, Catalog
from fedfleet.shared.recordview import (
    RecordView,
    as_record,
    errors,
    failures,
    number,
    rejected,
    timeouts,
)
from fedfleet.shared.registry import registry_entries

REPORT_FILE = "report.html"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}td.text,th.text{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{width:520px;max-width:100%;
border:1px solid #eee}
.status-completed{color:#17762b}.status-failed,.status-interrupted{color:#b3261e}
code{font-size:.9em}
"""

_FIXED_COLUMNS: list[tuple[str, str]] = [
    ("round", "round"), ("wall_s", "wall s"), ("train_replies", "aggregated"),
    ("rejected", "rejected"), ("failed", "failed"), ("timeouts", "timed out"),
    ("train_loss", "train loss"), ("train_accuracy", "train acc"),
    ("eval_loss", "eval loss"), ("eval_accuracy", "eval acc"),
    ("central_loss", "test loss"), ("central_accuracy", "test acc"),
    ("max_client_train_s", "slowest train s"),
]


def round_columns(catalog: Catalog = CATALOG) -> list[tuple[str, str]]:
    """Return the round table's (row field, header) pairs, then the checkpoint's.

    The usual columns come first, then each other metric the catalog gives a
    ``report`` header.
    """
    known = {key for key, _ in _FIXED_COLUMNS}
    extra = [(m.round_key, m.report) for m in catalog
             if m.report and m.round_key and m.round_key not in known]
    return [*_FIXED_COLUMNS, *((k, h) for k, h in extra if k and h),
            ("checkpoint", "checkpoint")]




def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(key: str, value: object) -> str:
    num = number(value)
    if num is None:
        return "" if value is None else _e(value)
    if key.endswith("accuracy"):
        return f"{num:.2%}"
    if key.endswith("_s"):
        return f"{num:.1f}"
    if key.endswith("loss"):
        return f"{num:.4f}"
    return f"{num:g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]],
           text_columns: Sequence[int] = ()) -> str:
    def cell(tag: str, i: int, content: str) -> str:
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{content}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _when(value: object) -> str:
    num = number(value)
    if num is None:
        return ""
    return dt.datetime.fromtimestamp(num, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _summary(record: RecordView) -> str:
    status = _e(record.status)
    last = record.rounds[-1] if record.rounds else {}
    items = [("status", f'<b class="status-{status}">{status}</b>'),
             ("rounds", f"{len(record.rounds)} of {_e(record.info.get('num_rounds', '?'))}"),
             ("started", _e(_when(record.info.get("started_at")))),
             ("finished", _e(_when(record.data.get("finished_at")))),
             ("final test accuracy", _fmt("accuracy", last.get("central_accuracy"))),
             ("final federated accuracy", _fmt("accuracy", last.get("eval_accuracy"))),
             ("parameters", _fmt("", record.info.get("num_params")))]
    if record.data.get("error"):
        items.append(("error", _e(record.data["error"])))
    resumed = record.info.get("resumed_from")
    if isinstance(resumed, Mapping):
        items.append(("continues", f"run {_e(resumed.get('run_id'))} after round "
                                   f"{_e(resumed.get('round'))}"))
    return _table([], [(k, v) for k, v in items if v], text_columns=(0, 1))


def _round_cells(row: Mapping[str, Any], columns: Sequence[tuple[str, str]]) -> list[str]:
    derived = {"rejected": rejected(row), "failed": failures(row), "timeouts": timeouts(row)}
    return [_fmt(key, derived.get(key, row.get(key))) for key, _ in columns]


def _errors(record: RecordView) -> str:
    rows = [(str(row["round"]), _e(e["phase"]), _e(e["node_id"]), _e(e["error"]))
            for row in record.rounds for e in errors(row)]
    if not rows:
        return "<p>No client failed or was rejected.</p>"
    return _table(["round", "phase", "node", "error"], rows, text_columns=(1, 2, 3))


def _devices(record: RecordView) -> str:
    book = record.participation()
    if not book:
        return "<p>No device was asked to train yet.</p>"
    k = record.straggler_rounds()
    rows = []
    for node, entry in sorted(book.items(), key=lambda item: (
            item[1]["contributed"] / max(item[1]["asked"], 1), item[0])):
        asked, given = entry["asked"], entry["contributed"]
        missed = entry["missed_in_a_row"]
        note = f"contributed to none of its last {missed} rounds" if missed >= k else ""
        last = entry["last_contributed"]
        rows.append((_e(node), str(asked), str(given),
                     f"{given / asked:.0%}" if asked else "",
                     "" if last is None else str(last), str(missed), _e(note)))
    note = (f"<p>Train rounds each device was asked in and contributed to (its update "
            f"went into the round's model); flagged when it contributed to none of the "
            f"last {k} rounds it was asked in (<code>straggler-rounds</code>).</p>")
    return note + _table(["node", "asked", "contributed", "share", "last contributed",
                          "missed in a row", "warning"], rows, text_columns=(0, 6))


def _models(run_dir: Path, record: RecordView) -> str:
    entries, from_file = registry_entries(run_dir, record)
    if not entries:
        return "<p>No checkpoints.</p>"
    def metric(entry: Mapping[str, Any]) -> object:
        metrics = entry.get("metrics")
        return metrics.get("central_accuracy") if isinstance(metrics, Mapping) else None

    rows = [(_e(m.get("round", "")), f"<code>{_e(m.get('file', ''))}</code>",
             f"<code>{_e(str(m.get('sha256', ''))[:16])}</code>",
             _fmt("accuracy", metric(m)),
             _e(len(m.get("nodes") or []) if isinstance(m.get("nodes"), list) else ""))
            for m in entries]
    note = "" if from_file else "<p>(no models.json yet: listed from metrics.json)</p>"
    return note + _table(["round", "file", "sha256", "test acc", "devices"], rows,
                         text_columns=(1, 2))


def render_report(run_dir: Path, record: RecordView | Mapping[str, Any],
                  plots: Sequence[Path] = (), catalog: Catalog = CATALOG) -> str:
    """Return the report page of ``record``; ``plots`` are files under ``run_dir``."""
    run = as_record(record)
    columns = round_columns(catalog)
    title = f"fedfleet run {run.run_id or run_dir.name}"
    images = "".join(
        f'<a href="{_e(p.relative_to(run_dir).as_posix())}"><img alt="{_e(p.stem)}" '
        f'src="{_e(p.relative_to(run_dir).as_posix())}"></a>' for p in plots)
    settings = _table(["setting", "value"],
                      [(_e(k), _e(v)) for k, v in sorted(run.settings.items())],
                      text_columns=(0, 1))
    rounds = _table([label for _, label in columns],
                    [_round_cells(row, columns) for row in run.rounds],
                    text_columns=(len(columns) - 1,))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1>{_summary(run)}"
            f"<h2>Plots</h2><div class=\"plots\">{images or '<p>No plots.</p>'}</div>"
            f"<h2>Rounds</h2>{rounds}"
            f"<h2>Devices</h2>{_devices(run)}"
            f"<h2>Failures and rejections</h2>{_errors(run)}"
            f"<h2>Models</h2>{_models(run_dir, run)}"
            f"<h2>Settings</h2>{settings}"
            f"</body></html>\n")


def write_report(run_dir: Path, record: RecordView | Mapping[str, Any],
                 plots: Sequence[Path] | None = None, catalog: Catalog = CATALOG) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path.

    ``plots`` defaults to the plot files already in ``run_dir/plots``.
    """
    if plots is None:
        plots = [run_dir / PLOTS_DIR / name for name in PLOT_FILES.values()
                 if (run_dir / PLOTS_DIR / name).exists()]
    path = run_dir / REPORT_FILE
    write_atomic(path, render_report(run_dir, record, plots, catalog))
    return path
