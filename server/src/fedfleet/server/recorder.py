"""Per-round bookkeeping wrapped around any Flower strategy.

``RecordingMixin`` sits in front of the chosen strategy class. It waits (bounded)
for enough clients, drops replies whose weights do not fit the model, keeps every
client's metrics and errors, and hands each finished round to the ``RunRecorder``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedfleet.server.outputs import RunOutputs
from fedfleet.server.validation import check_values, norm_outliers, update_norm
from fedfleet.shared.compression import decode_update, encode_weights
from fedfleet.shared.constants import ARRAYS_KEY, NUM_EXAMPLES_KEY
from fedfleet.shared.errors import FedfleetError, ModelMismatchError
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.weights import WeightSpec, check_weights

log = logging.getLogger("fedfleet")

_REASON = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def describe_error(reason: str | None) -> str:
    """Turn Flower's ``<class 'pkg.Err'>:<'text'>`` into ``Err: text``."""
    match = _REASON.match(reason or "")
    return f"{match.group(1)}: {match.group(2)}" if match else (reason or "unknown error")


@dataclass(frozen=True)
class UpdateLimits:
    """What a round's replies must meet: per-reply bounds, and how many are needed.

    See :mod:`fedfleet.server.validation` for the per-reply checks.
    """

    max_examples: int = 10_000_000
    max_update_norm_ratio: float = 10.0
    min_replies: int = 1


def _num_examples(msg: Message) -> object:
    for record in msg.content.metric_records.values():
        if NUM_EXAMPLES_KEY in record:
            return record[NUM_EXAMPLES_KEY]
    return None


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

    def _client(self, msg: Message) -> dict[str, Any]:
        node = str(msg.metadata.src_node_id)
        return self.current["clients"].setdefault(node, {"node_id": node})  # type: ignore[no-any-return]

    def accept_train(self, replies: Iterable[Message]) -> list[Message]:
        """Record train replies; return those fit to aggregate.

        A reply is left out (and logged and counted as rejected) if its weights do not
        fit the model, are not finite, claim an implausible number of examples, or move
        the model much further than the round's other replies.
        """
        candidates: dict[str, tuple[Message, list[Any]]] = {}
        norms: dict[str, float] = {}
        for msg in replies:
            if msg.has_error():
                self._error("train", msg, describe_error(msg.error.reason))
                continue
            origin = f"node {msg.metadata.src_node_id}"
            try:
                record = msg.content.array_records.get(ARRAYS_KEY)
                if record is None:
                    raise ModelMismatchError("the reply carries no weights")
                received = record.to_numpy_ndarrays()
                self.current["payload_bytes_up"] += sum(a.nbytes for a in received)
                weights = decode_update(received, self.base, self.compression, origin)
                check_weights(self.weight_specs, weights, origin)
                check_values(weights, _num_examples(msg), self.limits.max_examples)
            except (FedfleetError, ValueError) as err:
                self._reject(msg, str(err))
                continue
            key = str(msg.metadata.src_node_id)
            candidates[key] = (msg, weights)
            norms[key] = update_norm(weights, self.base)
        outliers = norm_outliers(norms, self.limits.max_update_norm_ratio)
        accepted: list[Message] = []
        for key, (msg, weights) in candidates.items():
            self._client(msg)["update_norm"] = norms[key]
            if key in outliers:
                self._reject(msg, outliers[key])
                continue
            if self.compression != "none":
                msg.content[ARRAYS_KEY] = ArrayRecord(weights)
            self._metrics(msg, "train")
            accepted.append(msg)
        self._previous_round_evaluation()
        self.current["train_replies"] = len(accepted)
        self.current["train_failures"] = len(self.current["errors"])
        self.current["rejected_replies"] = sum(
            1 for e in self.current["errors"] if e["error"].startswith("rejected: "))
        self.current["train_phase_s"] = time.perf_counter() - self._t0
        return accepted

    def _reject(self, msg: Message, reason: str) -> None:
        self._error("train", msg, f"rejected: {reason}")

    def accept_evaluate(self, replies: Iterable[Message]) -> list[Message]:
        """Record evaluation replies; return the successful ones."""
        ok: list[Message] = []
        for msg in replies:
            if msg.has_error():
                self._error("evaluate", msg, describe_error(msg.error.reason))
            else:
                self._metrics(msg, "evaluate")
                ok.append(msg)
        self.current["eval_replies"] = len(ok)
        return ok

    def _previous_round_evaluation(self) -> None:
        """File the clients' ``global_eval_*`` scores under the round they measured.

        With ``client-eval = with-train`` each client scores the weights it receives,
        i.e. the previous round's global model, before training on them.
        """
        rounds = self.record["rounds"]
        scores = [(c["node_id"], c.pop("global_eval_loss"), c.pop("global_eval_accuracy"),
                   c.pop("global_eval_examples"))
                  for c in self.current["clients"].values() if "global_eval_loss" in c]
        if not scores or not rounds:
            return
        row = rounds[-1]
        total = sum(n for *_, n in scores)
        row["eval_replies"] = len(scores)
        row["eval_loss"] = sum(loss * n for _, loss, _, n in scores) / total
        row["eval_accuracy"] = sum(acc * n for _, _, acc, n in scores) / total
        by_node = {c["node_id"]: c for c in row["clients"]}
        for node, loss, acc, n in scores:
            if node not in by_node:  # a client that missed that round's training
                by_node[node] = {"node_id": node}
                row["clients"].append(by_node[node])
            by_node[node].update({"eval_loss": loss, "eval_accuracy": acc,
                                  f"eval_{NUM_EXAMPLES_KEY}": n})
        self.save()

    def _metrics(self, msg: Message, phase: str) -> None:
        client = self._client(msg)
        for record in msg.content.metric_records.values():
            for key, value in record.items():
                client[key if phase == "train" or key.startswith("eval") else
                       f"eval_{key}"] = value

    def _error(self, phase: str, msg: Message, text: str) -> None:
        node = msg.metadata.src_node_id
        self.current["errors"].append({"phase": phase, "node_id": str(node),
                                       "error": text})
        log.warning("Round %s %s: node %s: %s", self.current["round"], phase, node, text)

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
        times = [c["train_time_s"] for c in row["clients"].values() if "train_time_s" in c]
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
    if row.get("train_failures", 0) - rejected > 0:
        parts.append(f"{row['train_failures'] - rejected} failed")
    if rejected:
        parts.append(f"{rejected} rejected")
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


def common_metrics(replies: list[Message]) -> list[Message]:
    """Keep in each reply only the metrics every reply has.

    Flower refuses to aggregate replies whose metric keys differ (a client that
    skipped an optional metric, or runs another release); every client's own metrics
    are already recorded, so the aggregate uses the keys they share.
    """
    keys = [{k for r in m.content.metric_records.values() for k in r} for m in replies]
    shared = set.intersection(*keys) if keys else set()
    for msg, own in zip(replies, keys, strict=True):
        if own != shared:
            for name, record in list(msg.content.metric_records.items()):
                msg.content[name] = MetricRecord(
                    {k: v for k, v in record.items() if k in shared})
    return replies


class RecordingMixin:
    """Put in front of a Flower strategy class to record rounds (see module doc)."""

    recorder: RunRecorder
    settings: RunSettings
    min_available_nodes: int
    round_offset: int = 0  # rounds done before a resume; Flower restarts from 1

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
        """Aggregate only the replies fit to aggregate (see RunRecorder.accept_train)."""
        accepted = self.recorder.accept_train(replies)
        if len(accepted) < max(1, self.recorder.limits.min_replies):
            return None, None  # the round ends the run with its reasons (end_round)
        arrays, metrics = super().aggregate_train(  # type: ignore[misc]
            server_round + self.round_offset, common_metrics(accepted))
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
        """Aggregate the successful evaluation replies."""
        ok = self.recorder.accept_evaluate(replies)
        if not ok:
            return None
        metrics = super().aggregate_evaluate(  # type: ignore[misc]
            server_round + self.round_offset, common_metrics(ok))
        self.recorder.aggregated(metrics)
        return metrics  # type: ignore[no-any-return]
