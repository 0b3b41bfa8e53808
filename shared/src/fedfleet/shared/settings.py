"""Run settings: one typed object, sent to every node as Flower's run config."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedfleet.shared.compression import METHODS
from fedfleet.shared.constants import DEFAULT_DATASET
from fedfleet.shared.data.partition import PARTITIONINGS
from fedfleet.shared.errors import ConfigError

Scalar = bool | int | float | str

CLIENT_EVAL = ("with-train", "separate")
"""How clients evaluate the global model: inside the next train message, or in
Flower's separate evaluate message every round."""

ROUND_DEADLINES = ("fixed", "paced")
"""How a round closes after its quorum: ``fixed``, the grace (times the quorum's time,
at least 10 s); ``paced``, also waiting for the devices whose learned reply time says
they will make it, up to ``round-pace-cap`` times the quorum's time
(:mod:`fedfleet.server.run.pace`)."""

OPTIMIZERS = ("adam", "sgd")
"""The devices' local optimizer: Adam, or plain SGD with optional (heavy-ball)
``momentum``, the optimizer most federated optimization results assume."""


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape such as ``"8,8,1"`` or ``"64"``.

    Raises
    ------
    ConfigError
        If a dimension is not a positive integer.
    """
    parts = [p.strip() for p in re.split(r"[,x]", str(text).strip())]
    dims = tuple(int(p) for p in parts if p.isdigit())
    if len(dims) != len(parts) or any(d <= 0 for d in dims):
        raise ConfigError(f"invalid input-shape {text!r}: use e.g. '28,28,1' or '20'")
    return dims


def parse_pairs(text: str) -> dict[str, Scalar]:
    """Parse ``"a=1,b=0.5,c=name"`` into typed values (int, float, bool or str).

    Raises
    ------
    ConfigError
        If an item is not ``key=value``.
    """
    pairs: dict[str, Scalar] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item!r} is not key=value (example: proximal_mu=0.1)")
        pairs[key.strip().replace("-", "_")] = _scalar(raw.strip())
    return pairs


def _scalar(raw: str) -> Scalar:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


@dataclass(frozen=True)
class RunSettings:
    """Everything a training run needs that server and clients must agree on.

    Field names map to run-config keys with ``-`` for ``_``
    (``local_epochs`` is ``local-epochs``).
    """

    num_rounds: int = 10
    local_epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.005
    optimizer: str = "adam"
    momentum: float = 0.0  # sgd only
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_clients: int = 2
    strategy: str = "fedavg"
    strategy_params: str = ""
    model: str = "cnn"
    input_shape: str = "8,8,1"
    num_classes: int = 10
    partitioning: str = "dirichlet"
    dirichlet_alpha: float = 0.5
    data_seed: int = 42
    eval_fraction: float = 0.2
    eval_data: str = DEFAULT_DATASET
    output_dir: str = ""
    tensorboard: str = ""  # folder for TensorBoard event files (one run-<id> per run)
    round_timeout: float = 300.0
    round_quorum: float = 0.5
    round_grace: float = 1.0
    round_min_grace: float = 10.0  # seconds; at least the devices' --poll-interval
    round_deadline: str = "fixed"
    round_pace_margin: float = 1.5
    round_pace_cap: float = 10.0
    straggler_rounds: int = 3
    client_wait_timeout: float = 300.0
    client_eval: str = "with-train"
    compression: str = "none"
    max_examples: int = 100_000
    max_examples_ratio: float = 3.0
    max_update_norm_ratio: float = 10.0
    min_replies: int = 1
    keep_checkpoints: int = 0  # newest rounds' checkpoints kept (+ the best); 0: all
    resume_from: str = ""  # run directory of an interrupted run to continue
    fedfleet_version: str = field(default="")

    def __post_init__(self) -> None:
        """Reject values that cannot work, naming the setting."""
        checks = [
            (self.num_rounds >= 1, "num-rounds must be >= 1"),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (self.learning_rate > 0, "learning-rate must be > 0"),
            (self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), not {self.momentum:g}"),
            (self.momentum == 0 or self.optimizer != "adam",
             f"momentum {self.momentum:g} needs optimizer sgd (Adam has no momentum "
             "setting): set optimizer sgd, or momentum 0"),
            (0 < self.fraction_train <= 1, "fraction-train must be in (0, 1]"),
            (0 <= self.fraction_evaluate <= 1, "fraction-evaluate must be in [0, 1]"),
            (self.min_clients >= 1, "min-clients must be >= 1"),
            (self.num_classes >= 2, "num-classes must be >= 2"),
            (self.partitioning in PARTITIONINGS,
             f"partitioning must be one of {', '.join(PARTITIONINGS)}"),
            (self.dirichlet_alpha > 0, "dirichlet-alpha must be > 0"),
            (0 <= self.eval_fraction < 1, "eval-fraction must be in [0, 1)"),
            (self.round_timeout > 0, "round-timeout must be > 0"),
            (0 < self.round_quorum <= 1, "round-quorum must be in (0, 1]"),
            (self.round_grace >= 0, "round-grace must be >= 0"),
            (self.round_min_grace >= 0, "round-min-grace must be >= 0"),
            (self.round_deadline in ROUND_DEADLINES,
             f"round-deadline must be one of {', '.join(ROUND_DEADLINES)}"),
            (self.round_pace_margin >= 1, "round-pace-margin must be >= 1"),
            (self.round_pace_cap >= 1, "round-pace-cap must be >= 1"),
            (self.straggler_rounds >= 1, "straggler-rounds must be >= 1"),
            (self.client_wait_timeout > 0, "client-wait-timeout must be > 0"),
            (self.client_eval in CLIENT_EVAL,
             f"client-eval must be one of {', '.join(CLIENT_EVAL)}"),
            (self.max_examples >= 1, "max-examples must be >= 1"),
            (self.max_examples_ratio >= 0, "max-examples-ratio must be >= 0"),
            (self.max_update_norm_ratio >= 0, "max-update-norm-ratio must be >= 0"),
            (self.min_replies >= 1, "min-replies must be >= 1"),
            (self.keep_checkpoints >= 0, "keep-checkpoints must be >= 0"),
            (self.compression in METHODS,
             f"compression must be one of {', '.join(METHODS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        parse_shape(self.input_shape)
        parse_pairs(self.strategy_params)

    @property
    def shape(self) -> tuple[int, ...]:
        """Return the model's input shape as a tuple."""
        return parse_shape(self.input_shape)

    def to_run_config(self) -> dict[str, Scalar]:
        """Return the settings as Flower run-config entries (kebab-case keys)."""
        return {f.name.replace("_", "-"): getattr(self, f.name)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Build settings from a run config, ignoring keys fedfleet does not know.

        Raises
        ------
        ConfigError
            If a value has the wrong type or is out of range.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f.name.replace("_", "-")
            if key not in config:
                continue
            kind: Callable[[Any], Any] = type(f.default)
            try:
                values[f.name] = kind(config[key])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"run setting {key}={config[key]!r}: {err}") from err
        return cls(**values)

    def replace(self, **changes: Any) -> RunSettings:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)
