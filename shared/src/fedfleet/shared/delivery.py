"""The message that takes a run's final model home to its devices.

The server sends Flower message type ``query.final_model`` to every device that
took part: the weights (plain float32, under ``arrays``) and a ``final-model``
config record made by :func:`pack_info`. The device stores the model and answers
with a ``final-model`` config record holding what it stored and the digest of the
weights it received, which the server compares with its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedfleet.shared.errors import ConfigError
from fedfleet.shared.recordview import number

ACTION = "final_model"
MESSAGE_TYPE = f"query.{ACTION}"
INFO_KEY = "final-model"
WEIGHTS_DIGEST = "weights-sha256"
_METRIC_PREFIX = "metric."


def pack_info(server_round: int, metrics: Mapping[str, Any], digest: str
              ) -> dict[str, int | float | str]:
    """Return the flat config-record values describing a final model."""
    info: dict[str, int | float | str] = {"round": int(server_round), WEIGHTS_DIGEST: digest}
    for key, value in metrics.items():
        num = number(value)
        if num is not None:
            info[f"{_METRIC_PREFIX}{key}"] = num
    return info


def unpack_info(record: Mapping[str, Any]) -> tuple[int, dict[str, Any], str]:
    """Return ``(round, metrics, weights digest)`` from a received config record.

    The values are not trusted: the round must be an integer, the digest text; the
    metrics are filtered later (:func:`fedfleet.shared.modelstore.clean_metrics`).

    Raises
    ------
    ConfigError
        If the round or the digest is missing or of the wrong type.
    """
    server_round = record.get("round")
    digest = record.get(WEIGHTS_DIGEST)
    if isinstance(server_round, bool) or not isinstance(server_round, int):
        raise ConfigError(f"the final model's round {server_round!r} is not an integer")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigError("the final model carries no weights digest")
    metrics = {k[len(_METRIC_PREFIX):]: v for k, v in record.items()
               if isinstance(k, str) and k.startswith(_METRIC_PREFIX)}
    return server_round, metrics, digest
