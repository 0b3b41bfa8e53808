"""The run's bookkeeper: builds each round's row from what the intake reported.

:class:`RunRecorder` owns the :class:`~fedfleet.shared.runrecord.RunRecord` of one run.
The strategy wrapper tells it when a round starts, what the intake made of the
replies, what the strategy aggregated, and when the round ends; the recorder keeps
the clients, errors and timings, files the clients' scores of the previous global
model under the round that produced it, and writes the record after every change
that matters. It makes no decisions: which replies count is the intake's, whether a
round ends the run the round policy's, which round fields the devices' metrics fill
(and how: the intake's weighted means, the largest value) the metric catalog's.

Per device it also counts the train rounds it was asked in and contributed to
(``participation`` in the record), and warns (a log line, and ``stragglers`` in the
round's row) when a device has contributed to none of the last ``straggler_rounds``
rounds it was asked in: a device too slow for the round's deadline, or broken. Only
the devices of the round are touched, so idle devices cost nothing per round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from fedfleet.server.results.run_files import RunFiles
from fedfleet.server.run.intake import EvalScore, IntakeResult
from fedfleet.shared.constants import NUM_EXAMPLES_KEY
from fedfleet.shared.metrics import CATALOG, Catalog
from fedfleet.shared.runrecord import (
    CentralScores,
    ClientRow,
    ErrorRow,
    Participation,
    Phase,
    RoundRow,
    RunInfo,
    RunRecord,
    Status,
    csv_columns,
    new_record,
    round_line,
)

log = logging.getLogger("fedfleet")

DEFAULT_STRAGGLER_ROUNDS = 3


class RunRecorder:
    """Keeps one run's record and writes it to the run's files (if it has a folder)."""

    def __init__(self, files: RunFiles | None, info: RunInfo,
                 straggler_rounds: int = DEFAULT_STRAGGLER_ROUNDS,
                 catalog: Catalog = CATALOG) -> None:
        """Start the record of a run that has just begun, and write it.

        A device that contributes to none of ``straggler_rounds`` rounds in a row that
        it was asked in is warned about. ``catalog``: the metrics the rows hold.
        """
        self.files = files
        self.catalog = catalog
        self.straggler_rounds = straggler_rounds
        self.record: RunRecord = new_record(info)
        self.row: RoundRow = {}
        self._clients: dict[str, ClientRow] = {}
        self._t0 = 0.0
        self.save()

    @property
    def rounds(self) -> list[RoundRow]:
        """Return the finished rounds."""
        return self.record["rounds"]

    @property
    def clients(self) -> dict[str, ClientRow]:
        """Return this round's clients so far, by node ID."""
        return self._clients

    def begin_round(self, run_round: int) -> None:
        """Start the row of ``run_round`` and its clock."""
        self._t0 = time.perf_counter()
        self._clients = {}
        self.row = {"round": run_round, "started_at": time.time(), "errors": [],
                    "payload_bytes_down": 0, "payload_bytes_up": 0}

    def sent(self, payload_bytes: int) -> None:
        """Count weights sent to devices this round."""
        self.row["payload_bytes_down"] = self.row.get("payload_bytes_down", 0) + \
            payload_bytes

    def _client(self, node: str) -> ClientRow:
        return self._clients.setdefault(node, {"node_id": node})

    def train_replies(self, result: IntakeResult) -> None:
        """Keep what the intake made of the round's train replies.

        Per client: the weight it got in the average, its update norm, its metrics
        (under ``device``) and what was dropped from its reply; per left-out reply an
        error with the reason.
        """
        row = self.row
        row["payload_bytes_up"] = row.get("payload_bytes_up", 0) + result.payload_bytes
        self._errors("train", result)
        scores: list[tuple[str, EvalScore]] = []
        for report in result.reports:
            client = self._client(report.node_id)
            client.update({"weight": report.weight, "update_norm": report.update_norm,
                           "device": dict(report.metrics)})
            self._dropped("train", client, report.dropped)
            if report.eval_score is not None:
                scores.append((report.node_id, report.eval_score))
        self._file_previous_round_scores(scores)
        errors = row["errors"]
        row["train_replies"] = len(result.accepted)
        row["train_failures"] = len(errors)
        row["rejected_replies"] = sum(1 for e in errors if e["kind"] == "rejected")
        row["no_reply"] = sum(1 for e in errors if e["kind"] == "deadline")
        row["train_phase_s"] = time.perf_counter() - self._t0
        contributed = {r.node_id for r in result.reports if r.weight is not None}
        asked = contributed | {r.node_id for r in result.rejected}
        self._participation(asked, contributed)

    def _participation(self, asked: set[str], contributed: set[str]) -> None:
        """Count the round for the devices ``asked``; warn of new stragglers."""
        run_round = self.row.get("round", 0)
        book = self.record.setdefault("participation", {})
        stragglers = []
        for node in sorted(asked):
            entry: Participation = book.setdefault(node, {
                "asked": 0, "contributed": 0, "missed_in_a_row": 0,
                "last_contributed": None})
            entry["asked"] += 1
            if node in contributed:
                entry["contributed"] += 1
                entry["missed_in_a_row"] = 0
                entry["last_contributed"] = run_round
                continue
            entry["missed_in_a_row"] += 1
            if entry["missed_in_a_row"] == self.straggler_rounds:
                stragglers.append(node)
                log.warning("Node %s contributed to none of the last %d rounds it was "
                            "asked in (%d of %d in this run): slower than the round's "
                            "deadline (see --round-deadline, --round-pace-cap) or failing",
                            node, self.straggler_rounds, entry["contributed"],
                            entry["asked"])
        if stragglers:
            self.row["stragglers"] = stragglers

    def evaluate_replies(self, result: IntakeResult) -> None:
        """Keep what the intake made of the round's evaluate replies."""
        self._errors("evaluate", result)
        for report in result.reports:
            client = self._client(report.node_id)
            device = client.setdefault("device", {})
            for key, value in report.metrics.items():
                device[key if key.startswith("eval") else f"eval_{key}"] = value
            client["eval_weight"] = report.weight
            self._dropped("evaluate", client, report.dropped)
        self.row["eval_replies"] = len(result.accepted)

    def aggregated(self, metrics: Mapping[str, float]) -> None:
        """Keep the round's averaged device metrics under their catalog round fields."""
        row = cast(dict[str, Any], self.row)
        for key, value in metrics.items():
            metric = self.catalog[key] if key in self.catalog else None
            if metric is not None and metric.sender == "device" and \
                    metric.aggregate == "weighted_mean" and metric.round_key:
                row[metric.round_key] = value

    def _errors(self, phase: Phase, result: IntakeResult) -> None:
        for rejection in result.rejected:
            error: ErrorRow = {"phase": phase, "node_id": rejection.node_id,
                               "kind": rejection.kind, "error": rejection.text}
            self.row["errors"].append(error)
            log.warning("Round %s %s: node %s: %s", self.row.get("round"), phase,
                        rejection.node_id, rejection.text)

    def _dropped(self, phase: Phase, client: ClientRow, notes: list[str]) -> None:
        if notes:
            client.setdefault("dropped", []).extend(notes)
            log.warning("Round %s %s: node %s: %s", self.row.get("round"), phase,
                        client["node_id"], "; ".join(notes))

    def _file_previous_round_scores(self, scores: list[tuple[str, EvalScore]]) -> None:
        """File the clients' ``global_eval_*`` scores under the round they measured.

        With ``client-eval = with-train`` each client scores the weights it receives,
        i.e. the previous round's global model, before training on them.
        """
        if not scores or not self.rounds:
            return
        row = self.rounds[-1]
        total = sum(s.examples for _, s in scores)
        row["eval_replies"] = len(scores)
        row["eval_loss"] = sum(s.loss * s.examples for _, s in scores) / total
        row["eval_accuracy"] = sum(s.accuracy * s.examples for _, s in scores) / total
        clients = row.setdefault("clients", [])
        by_node = {c["node_id"]: c for c in clients}
        for node, score in scores:
            if node not in by_node:  # a client that missed that round's training
                by_node[node] = {"node_id": node}
                clients.append(by_node[node])
            by_node[node].setdefault("device", {}).update(
                {"eval_loss": score.loss, "eval_accuracy": score.accuracy,
                 f"eval_{NUM_EXAMPLES_KEY}": score.examples})
        self.save()

    def initial(self, central: CentralScores | None) -> None:
        """Keep the initial model's test-set scores."""
        self.record["initial"] = central
        self.save()

    def end_round(self, central: CentralScores | None, checkpoint: Path | None
                  ) -> RoundRow:
        """Finish the round's row: test-set scores, checkpoint, time; write; log it."""
        row = self.row
        if central:
            row["central_loss"] = central["loss"]
            row["central_accuracy"] = central["accuracy"]
        row["clients"] = list(self._clients.values())
        fields = cast(dict[str, Any], row)
        for metric in self.catalog:
            if metric.aggregate == "max" and metric.round_key:
                values = [c["device"][metric.name] for c in row["clients"]
                          if metric.name in c.get("device", {})]
                fields[metric.round_key] = max(values) if values else None
        if checkpoint is not None:
            row["checkpoint"] = checkpoint.name
        row["wall_s"] = time.perf_counter() - self._t0
        self.rounds.append(row)
        self.save()
        log.info("%s", round_line(row, self.record["run"].get("num_rounds"),
                                  self.catalog))
        return row

    def finish(self, status: Status, error: str | None = None) -> None:
        """Mark the run ``completed`` or ``failed`` (with ``error``) and write it."""
        self.record["status"] = status
        if error:
            self.record["error"] = error
        self.record["finished_at"] = time.time()
        self.save()

    def save(self) -> None:
        """Write the record, if the run has a folder."""
        if self.files is not None:
            self.files.write_record(self.record, csv_columns(self.catalog))
