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
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedfleet.server.outputs import RunOutputs
from fedfleet.shared.constants import ARRAYS_KEY
from fedfleet.shared.errors import FedfleetError, ModelMismatchError
from fedfleet.shared.weights import WeightSpec, check_weights

log = logging.getLogger("fedfleet")

_REASON = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def describe_error(reason: str | None) -> str:
    """Turn Flower's ``<class 'pkg.Err'>:<'text'>`` into ``Err: text``."""
    match = _REASON.match(reason or "")
    return f"{match.group(1)}: {match.group(2)}" if match else (reason or "unknown error")


class RunRecorder:
    """Collects the rounds of one run and writes them to its outputs."""

    def __init__(self, outputs: RunOutputs | None, info: dict[str, Any],
                 weight_specs: list[WeightSpec], model: Any) -> None:
        """Start an empty record; ``model`` is used to save checkpoints."""
        self.outputs = outputs
        self.weight_specs = weight_specs
        self.model = model
        self.record: dict[str, Any] = {"run": info, "status": "running", "initial": None,
                                       "rounds": []}
        self.current: dict[str, Any] = {}
        self._t0 = 0.0
        self.save()

    def begin_round(self, server_round: int) -> None:
        """Start timing ``server_round``."""
        self._t0 = time.perf_counter()
        self.current = {"round": server_round, "started_at": time.time(),
                        "clients": {}, "errors": []}

    def _client(self, msg: Message) -> dict[str, Any]:
        node = str(msg.metadata.src_node_id)
        return self.current["clients"].setdefault(node, {"node_id": node})  # type: ignore[no-any-return]

    def accept_train(self, replies: Iterable[Message]) -> list[Message]:
        """Record train replies; return those whose weights fit the model."""
        accepted: list[Message] = []
        for msg in replies:
            if msg.has_error():
                self._error("train", msg, describe_error(msg.error.reason))
                continue
            try:
                arrays = msg.content.array_records.get(ARRAYS_KEY)
                if arrays is None:
                    raise ModelMismatchError("the reply carries no weights")
                check_weights(self.weight_specs, arrays.to_numpy_ndarrays(),
                              f"node {msg.metadata.src_node_id}")
            except (FedfleetError, ValueError) as err:
                self._error("train", msg, f"rejected: {err}")
                continue
            self._metrics(msg, "train")
            accepted.append(msg)
        self.current["train_replies"] = len(accepted)
        self.current["train_failures"] = len(self.current["errors"])
        self.current["train_phase_s"] = time.perf_counter() - self._t0
        return accepted

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

    def aggregated(self, phase: str, metrics: MetricRecord | None) -> None:
        """Keep the strategy's aggregated train or evaluate metrics."""
        for key, value in dict(metrics or {}).items():
            if key != "num-examples" and not key.endswith("_s"):
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
        if row["train_replies"] == 0:
            reasons = "; ".join(f"node {e['node_id']}: {e['error']}" for e in row["errors"])
            raise FedfleetError(f"no client could train in round {server_round}: "
                                f"{reasons or 'no replies before the round timeout'}")

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
    if row.get("train_failures"):
        parts.append(f"{row['train_failures']} failed")
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
    client_wait_timeout: float
    min_available_nodes: int

    def configure_train(self, server_round: int, arrays: ArrayRecord,
                        config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Start the round once enough clients are connected."""
        self.recorder.begin_round(server_round)
        wait_for_clients(grid, self.min_available_nodes, self.client_wait_timeout)
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc,no-any-return]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate only the replies whose weights fit the model."""
        accepted = self.recorder.accept_train(replies)
        if not accepted:
            return None, None
        arrays, metrics = super().aggregate_train(server_round, accepted)  # type: ignore[misc]
        self.recorder.aggregated("train", metrics)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Skip federated evaluation when no client could train this round."""
        if not self.recorder.current.get("train_replies"):
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc,no-any-return]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Aggregate the successful evaluation replies."""
        ok = self.recorder.accept_evaluate(replies)
        if not ok:
            return None
        metrics = super().aggregate_evaluate(server_round, ok)  # type: ignore[misc]
        self.recorder.aggregated("evaluate", metrics)
        return metrics  # type: ignore[no-any-return]
