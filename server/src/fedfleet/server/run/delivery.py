"""Send a run's final model home to the devices that trained it.

``send_final_model(grid, node_ids, arrays, info, timeout)`` sends every device the
final weights (``query.final_model``, see :mod:`fedfleet.shared.delivery`) and
returns one outcome per node: what the device stored, why it could not, or that it
did not answer in time. A device that fails or stays silent never holds up the
others, and nothing here raises because of what a device did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedfleet.server.run.recorder import RunRecorder
from fedfleet.shared import delivery
from fedfleet.shared.constants import ARRAYS_KEY
from fedfleet.shared.fileio import weights_digest
from fedfleet.shared.recordview import RecordView, as_record, contributors

log = logging.getLogger("fedfleet")

POLL = 0.2
METRIC_KEYS = ("central_accuracy", "central_loss", "eval_accuracy", "eval_loss",
               "train_accuracy", "train_loss")


def final_model_info(record: RecordView | Mapping[str, Any]) -> dict[str, Any]:
    """Return ``info`` for :func:`send_final_model` from a run record's last round."""
    run = as_record(record)
    last = run.rounds[-1] if run.rounds else {}
    return {"round": run.last_round or 0,
            "metrics": {k: last[k] for k in METRIC_KEYS if k in last}}


def _describe(reason: str | None) -> str:
    from fedfleet.server.run.intake import describe_error

    return describe_error(reason)


def _outcome(reply: Message, digest: str) -> str:
    if reply.has_error():
        return f"failed: {_describe(reply.error.reason)}"
    answer = reply.content.config_records.get(delivery.INFO_KEY)
    if answer is None:
        return "failed: the device's reply says nothing about the model"
    if answer.get(delivery.WEIGHTS_DIGEST) != digest:
        return "failed: the device stored other weights than were sent (digest mismatch)"
    return (f"stored {answer.get('stored')!s} (keras sha256 "
            f"{str(answer.get('keras-sha256'))[:12]}, tflite sha256 "
            f"{str(answer.get('tflite-sha256'))[:12]})")


def send_final_model(grid: Grid, node_ids: Iterable[int], arrays: ArrayRecord,
                     info: Mapping[str, Any], timeout: float) -> dict[int, str]:
    """Send the final model to ``node_ids``; return each node's outcome.

    Parameters
    ----------
    grid
        The ServerApp's grid.
    node_ids
        The devices that took part in the run.
    arrays
        The final global weights (float32, uncompressed).
    info
        ``round`` and ``metrics`` of the model (see :func:`final_model_info`).
    timeout
        Seconds to wait for the devices' answers.

    Returns
    -------
    dict
        node id -> ``stored models/run-...`` | ``failed: <reason>`` |
        ``no reply within <timeout>s``.
    """
    nodes = list(dict.fromkeys(int(n) for n in node_ids))
    if not nodes:
        return {}
    digest = weights_digest(arrays.to_numpy_ndarrays())
    config = ConfigRecord(dict(delivery.pack_info(int(info.get("round", 0)),
                                                  info.get("metrics") or {}, digest)))
    messages = [Message(RecordDict({ARRAYS_KEY: arrays, delivery.INFO_KEY: config}),
                        node, delivery.MESSAGE_TYPE, group_id="final-model")
                for node in nodes]
    outcomes = dict.fromkeys(nodes, f"no reply within {timeout:.0f}s")
    ids: list[str | None] = list(grid.push_messages(messages))
    ids += [None] * (len(nodes) - len(ids))  # Flower returns [] when the push fails
    pending: dict[str, int] = {}
    for mid, node in zip(ids, nodes, strict=False):
        if mid:
            pending[str(mid)] = node
        else:
            outcomes[node] = "failed: the SuperLink did not take the message for it"
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            node_id = pending.pop(reply.metadata.reply_to_message_id, -1)
            if node_id >= 0:  # a reply to a message of ours
                outcomes[node_id] = _outcome(reply, digest)
        if pending:
            time.sleep(POLL)
    for node, outcome in outcomes.items():
        log.info("Final model to node %s: %s", node, outcome)
    return outcomes


def deliver_final_model(grid: Grid, recorder: RunRecorder, arrays: ArrayRecord,
                        timeout: float) -> None:
    """Send the final model to every device that contributed to a round; record how.

    Each node's outcome lands in the record (``final_model_delivery``); no failure
    here, of a device or of the grid, fails the run.
    """
    record = recorder.record
    nodes = sorted({int(n) for row in record["rounds"] for n in contributors(row)})
    try:
        outcomes = send_final_model(grid, nodes, arrays, final_model_info(record), timeout)
    except Exception as err:  # the run itself has succeeded
        log.warning("Could not send the final model to the devices: %s: %s",
                    type(err).__name__, err)
        outcomes = dict.fromkeys(nodes, f"failed: {type(err).__name__}: {err}")
    record["final_model_delivery"] = {str(node): text for node, text in outcomes.items()}
    recorder.save()
