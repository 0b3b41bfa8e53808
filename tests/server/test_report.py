"""The HTML report: self-contained, references its plots, escapes what devices sent."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner
from records import sample_record

from fedfleet.server.results.plots import PLOT_FILES, write_plots
from fedfleet.server.results.report import write_report
from fedfleet.shared.cli import cli


def test_report_references_its_plots_and_has_the_round_table(tmp_path: Path) -> None:
    """Relative links to every plot (which exist), one table row per round, settings."""
    record = sample_record(4)
    page = write_report(tmp_path, record, write_plots(tmp_path, record))
    text = page.read_text()
    sources = re.findall(r'<img alt="[^"]*" src="([^"]+)"', text)
    assert sorted(sources) == sorted(f"plots/{n}" for n in PLOT_FILES.values())
    assert all((tmp_path / s).is_file() for s in sources)
    assert "http" not in text and "<script" not in text  # nothing external, no code
    rounds = re.search(r"<h2>Rounds</h2><table>(.*?)</table>", text, re.DOTALL)
    assert rounds is not None
    assert rounds.group(1).count("<tr>") == 1 + 4  # header + one per round
    for row in record["rounds"]:
        assert f"{row['central_accuracy']:.2%}" in rounds.group(1)
    assert "eval-data" in text and "builtin:digits" in text
    assert "rejected: update norm 812.3" in text and "no reply by the deadline" in text


def test_the_run_folder_can_be_copied_elsewhere(tmp_path: Path) -> None:
    """The copied report still finds its plots: every link is relative to the folder."""
    record = sample_record(2)
    write_report(tmp_path / "run", record, write_plots(tmp_path / "run", record))
    copy = Path(shutil.copytree(tmp_path / "run", tmp_path / "elsewhere" / "run"))
    text = (copy / "report.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert links and all((copy / link).is_file() for link in links)


def test_text_from_devices_is_escaped(tmp_path: Path) -> None:
    """A device that puts HTML in its error or node id cannot inject markup."""
    record = sample_record(1)
    record["rounds"][0]["errors"] = [{"phase": "train", "node_id": '"><img src=x>',
                                      "error": "<script>alert(1)</script>"}]
    record["run"]["settings"]["model"] = "</td><script>x()</script>"
    text = write_report(tmp_path, record).read_text()
    assert "<script>" not in text and "<img src=x>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_command_draws_and_prints_the_page(tmp_path: Path) -> None:
    """'fedfleet report RUN_DIR' (re)draws the plots and prints the report's path."""
    run_dir = tmp_path / "run-4242"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(sample_record(3)))
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run_dir / "report.html")
    assert all((run_dir / "plots" / n).is_file() for n in PLOT_FILES.values())


def test_report_of_a_folder_without_a_record_is_one_line(tmp_path: Path) -> None:
    """Not a run folder: a one-line error naming it, exit 1."""
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert f"Error: {tmp_path} has no readable metrics.json" in result.output
