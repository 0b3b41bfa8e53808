"""Per-round bookkeeping wrapped around any Flower strategy.

``RecordingMixin`` sits in front of the chosen strategy class. It waits (bounded)
for enough clients, passes every reply through the reply intake
(:mod:`fedfleet.server.intake`: only the messages it rebuilt reach the strategy), and
hands what the intake reports and each finished round to the ``RunRecorder``, which
keeps the books: clients, errors, files, one line per round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedfleet.server.intake import (
    Intake,
    IntakeLimits,
    IntakeResult,
    describe_error,
)
from fedfleet.server.outputs import RunOutputs
from fedfleet.shared.compression import encode_weights
from fedfleet.shared.constants import ARRAYS_KEY, NUM_EXAMPLES_KEY
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import WeightSpec

log = logging.getLogger("fedfleet")

__all__ = ["RecordingMixin", "RunRecorder", "UpdateLimits", "describe_error",
           "round_line", "wait_for_clients"]


@dataclass(frozen=True)
class UpdateLimits:
    """How many usable replies a round needs (the per-reply bounds are the intake's)."""

    min_replies: int = 1


class RunRecorder:
    """Collects the rounds of one run and writes them to its outputs."""

    def __init__(self, outputs: RunOutputs | None, info: dict[str, Any],
                 weight_specs: list[WeightSpec], model: Any,
                 compression: str = "none", limits: UpdateLimits | None = None) -> None:
        """Start an empty record; ``model`` is used to save checkpoints."""
        self.outputs = outputs
        self.limits = limits or UpdateLimits()
        self.weight_specs = weight_specs
        self.model = model
        self.compression = compression
        self.base: list[Any] = []
        self.record: dict[str, Any] = {"run": info, "status": "running", "initial": None,
                                       "rounds": []}
        self.current: dict[str, Any] = {}
        self._t0 = 0.0
        self.save()

    def begin_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """Start timing ``server_round``, whose global weights are ``arrays``."""
        self._t0 = time.perf_counter()
        self.base = list(arrays.to_numpy_ndarrays())
        self.current = {"round": server_round, "started_at": time.time(),
                        "clients": {}, "errors": [], "payload_bytes_down": 0,
                        "payload_bytes_up": 0}

    def conform(self, arrays: ArrayRecord | None) -> ArrayRecord | None:
        """Cast aggregated weights back to the model's dtypes.

        Server-side optimizers (FedAdam and the FedOpt family) compute in float64; the
        model, and every client, expects float32.
        """
        if arrays is None:
            return None
        values = arrays.to_numpy_ndarrays()
        if all(np.dtype(a.dtype).name == dtype for a, (_, dtype)
               in zip(values, self.weight_specs, strict=False)):
            return arrays
        return ArrayRecord([a.astype(dtype) for a, (_, dtype)
                            in zip(values, self.weight_specs, strict=True)])

    def outgoing(self, messages: Iterable[Message], arrays: ArrayRecord) -> list[Message]:
        """Compress the global weights in ``messages`` (if on) and count their bytes."""
        messages = list(messages)
        payload = arrays
        if self.compression != "none" and messages:
            payload = ArrayRecord(encode_weights(arrays.to_numpy_ndarrays(),
                                                 self.compression))
            for msg in messages:
                msg.content[ARRAYS_KEY] = payload
        size = sum(a.nbytes for a in payload.to_numpy_ndarrays())
        self.current["payload_bytes_down"] += size * len(messages)
        return messages

    def _client(self, node: str) -> dict[str, Any]:
        clients: dict[str, dict[str, Any]] = self.current["clients"]
        return clients.setdefault(node, {"node_id": node})

    def record_train(self, result: IntakeResult) -> None:
        """Keep what the intake made of the round's train replies.

        Per client: the weight it got in the average, its update norm, its metrics
        (under ``device``: what it reported, never a server field) and what was
        dropped from its reply; per left-out reply an error with the reason.
        """
        self.current["payload_bytes_up"] += result.payload_bytes
        self._rejections("train", result)
        scores = []
        for report in result.reports:
            client = self._client(report.node_id)
            client.update({"weight": report.weight, "update_norm": report.update_norm,
                           "device": report.metrics})
            self._dropped("train", client, report.dropped)
            if report.eval_score is not None:
                scores.append((report.node_id, report.eval_score))
        self._previous_round_evaluation(scores)
        errors = self.current["errors"]
        self.current["train_replies"] = len(result.accepted)
        self.current["train_failures"] = len(errors)
        self.current["rejected_replies"] = sum(
            1 for e in errors if e["error"].startswith("rejected: "))
        self.current["no_reply"] = sum(1 for e in errors if e.get("kind") == "deadline")
        self.current["train_phase_s"] = time.perf_counter() - self._t0

    def record_evaluate(self, result: IntakeResult) -> None:
        """Keep what the intake made of the round's evaluate replies."""
        self._rejections("evaluate", result)
        for report in result.reports:
            client = self._client(report.node_id)
            device = client.setdefault("device", {})
            for key, value in report.metrics.items():
                device[key if key.startswith("eval") else f"eval_{key}"] = value
            client["eval_weight"] = report.weight
            self._dropped("evaluate", client, report.dropped)
        self.current["eval_replies"] = len(result.accepted)

    def _rejections(self, phase: str, result: IntakeResult) -> None:
        for rejection in result.rejected:
            self.current["errors"].append({"phase": phase, "node_id": rejection.node_id,
                                           "kind": rejection.kind,
                                           "error": rejection.text})
            log.warning("Round %s %s: node %s: %s", self.current["round"], phase,
                        rejection.node_id, rejection.text)

    def _dropped(self, phase: str, client: dict[str, Any], notes: list[str]) -> None:
        if notes:
            client.setdefault("dropped", []).extend(notes)
            log.warning("Round %s %s: node %s: %s", self.current["round"], phase,
                        client["node_id"], "; ".join(notes))

    def _previous_round_evaluation(self, scores: list[tuple[str, Any]]) -> None:
        """File the clients' ``global_eval_*`` scores under the round they measured.

        With ``client-eval = with-train`` each client scores the weights it receives,
        i.e. the previous round's global model, before training on them.
        """
        rounds = self.record["rounds"]
        if not scores or not rounds:
            return
        row = rounds[-1]
        total = sum(s.examples for _, s in scores)
        row["eval_replies"] = len(scores)
        row["eval_loss"] = sum(s.loss * s.examples for _, s in scores) / total
        row["eval_accuracy"] = sum(s.accuracy * s.examples for _, s in scores) / total
        by_node = {c["node_id"]: c for c in row["clients"]}
        for node, score in scores:
            if node not in by_node:  # a client that missed that round's training
                by_node[node] = {"node_id": node}
                row["clients"].append(by_node[node])
            by_node[node].setdefault("device", {}).update(
                {"eval_loss": score.loss, "eval_accuracy": score.accuracy,
                 f"eval_{NUM_EXAMPLES_KEY}": score.examples})
        self.save()

    def aggregated(self, metrics: MetricRecord | None) -> None:
        """Keep the strategy's aggregated train or evaluate metrics."""
        for key, value in dict(metrics or {}).items():
            if key in ("train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                       "warm"):
                self.current[key] = value

    def end_round(self, server_round: int, arrays: ArrayRecord,
                  central: dict[str, float] | None) -> None:
        """Finish a round: central metrics, checkpoint, files, one log line."""
        if server_round == 0:
            self.record["initial"] = central
            self.save()
            return
        row = self.current
        if central:
            row["central_loss"] = central["loss"]
            row["central_accuracy"] = central["accuracy"]
        times = [c["device"]["train_time_s"] for c in row["clients"].values()
                 if "train_time_s" in c.get("device", {})]
        row["max_client_train_s"] = max(times) if times else None
        row["clients"] = list(row["clients"].values())
        if self.outputs is not None:
            self.model.set_weights(arrays.to_numpy_ndarrays())
            path = self.outputs.checkpoint(server_round)
            self.outputs.save_model(self.model, path)
            row["checkpoint"] = path.name
        row["wall_s"] = time.perf_counter() - self._t0
        self.record["rounds"].append(row)
        self.save()
        log.info("%s", round_line(row, self.record["run"].get("num_rounds")))
        if row["train_replies"] < self.limits.min_replies:
            reasons = "; ".join(f"node {e['node_id']}: {e['error']}" for e in row["errors"])
            if row["train_replies"] == 0:
                raise FedfleetError(f"no client could train in round {server_round}: "
                                    f"{reasons or 'no replies before the round timeout'}")
            raise FedfleetError(
                f"round {server_round} got {row['train_replies']} usable replies, fewer "
                f"than --min-replies {self.limits.min_replies}"
                f"{': ' + reasons if reasons else ''}; the global model was not changed")

    def finish(self, status: str, error: str | None = None) -> None:
        """Mark the run finished (``completed`` or ``failed``) and write the record."""
        self.record["status"] = status
        if error:
            self.record["error"] = error
        self.record["finished_at"] = time.time()
        self.save()

    def save(self) -> None:
        """Write the record, if the run has an output directory."""
        if self.outputs is not None:
            self.outputs.write_metrics(self.record)


def round_line(row: dict[str, Any], num_rounds: int | None = None) -> str:
    """One readable line about a finished round."""
    parts = [f"round {row['round']}" + (f"/{num_rounds}" if num_rounds else ""),
             f"{row.get('wall_s', 0):.1f}s",
             f"{row.get('train_replies', 0)} clients"]
    rejected = row.get("rejected_replies") or 0
    silent = row.get("no_reply") or 0
    if row.get("train_failures", 0) - rejected - silent > 0:
        parts.append(f"{row['train_failures'] - rejected - silent} failed")
    if rejected:
        parts.append(f"{rejected} rejected")
    if silent:
        parts.append(f"{silent} no reply")
    if row.get("train_loss") is not None:
        parts.append(f"train loss {row['train_loss']:.4f}")
    if row.get("eval_accuracy") is not None:
        parts.append(f"client acc {row['eval_accuracy']:.2%}")
    if row.get("central_accuracy") is not None:
        parts.append(f"test acc {row['central_accuracy']:.2%}")
    return " | ".join(parts)


def wait_for_clients(grid: Grid, needed: int, timeout: float) -> int:
    """Wait until ``needed`` clients are connected; return how many are.

    Raises
    ------
    FedfleetError
        If fewer than ``needed`` are connected after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        connected = len(list(grid.get_node_ids()))
        if connected >= needed:
            return connected
        if time.monotonic() >= deadline:
            raise FedfleetError(
                f"only {connected} of the {needed} clients needed were connected after "
                f"{timeout:.0f}s; start more clients or lower --min-clients"
            )
        if connected != last:
            log.info("Waiting for clients: %d connected, %d needed", connected, needed)
            last = connected
        time.sleep(1.0)


class RecordingMixin:
    """Put in front of a Flower strategy class to record rounds (see module doc)."""

    recorder: RunRecorder
    settings: RunSettings
    min_available_nodes: int
    round_offset: int = 0  # rounds done before a resume; Flower restarts from 1
    _intake: Intake | None = None

    @property
    def intake(self) -> Intake:
        """Return the reply intake for this run's model, compression and limits."""
        if self._intake is None:
            s = self.settings
            self._intake = Intake(self.recorder.weight_specs, s.compression, IntakeLimits(
                s.max_examples, s.max_examples_ratio, s.max_update_norm_ratio))
        return self._intake

    def configure_train(self, server_round: int, arrays: ArrayRecord,
                        config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Start the round once enough clients are connected."""
        server_round += self.round_offset
        self.recorder.begin_round(server_round, arrays)
        wait_for_clients(grid, self.min_available_nodes, self.settings.client_wait_timeout)
        messages = super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]
        return self.recorder.outgoing(messages, arrays)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate only the messages the intake rebuilt from fit replies."""
        result = self.intake.train(replies, self.recorder.base)
        self.recorder.record_train(result)
        if len(result.accepted) < max(1, self.recorder.limits.min_replies):
            return None, None  # the round ends the run with its reasons (end_round)
        arrays, _ = super().aggregate_train(  # type: ignore[misc]
            server_round + self.round_offset, result.accepted)
        metrics = MetricRecord(result.metrics)  # type: ignore[arg-type]
        self.recorder.aggregated(metrics)
        return self.recorder.conform(arrays), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Evaluate on clients only when a separate evaluate message is needed.

        Skipped when no client could train this round, and with ``client-eval =
        with-train`` except after the last round (the next train message carries
        the evaluation of this round's model).
        """
        server_round += self.round_offset
        if not self.recorder.current.get("train_replies"):
            return []
        if self.settings.client_eval == "with-train" and \
                server_round < self.settings.num_rounds:
            return []
        messages = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return self.recorder.outgoing(messages, arrays)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Aggregate the evaluation replies the intake accepted."""
        result = self.intake.evaluate(replies)
        self.recorder.record_evaluate(result)
        if not result.accepted:
            return None
        super().aggregate_evaluate(  # type: ignore[misc]
            server_round + self.round_offset, result.accepted)
        metrics = MetricRecord(result.metrics)  # type: ignore[arg-type]
        self.recorder.aggregated(metrics)
        return metrics
