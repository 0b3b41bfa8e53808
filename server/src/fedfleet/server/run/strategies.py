"""Flower strategies by name, with their parameters checked against the constructor."""

from __future__ import annotations

import inspect
from typing import Any

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from fedfleet.shared.errors import ConfigError
from fedfleet.shared.settings import RunSettings, parse_pairs

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
}

MANAGED = {"fraction_train", "fraction_evaluate", "min_train_nodes",
           "min_evaluate_nodes", "min_available_nodes", "weighted_by_key",
           "arrayrecord_key", "configrecord_key", "train_metrics_aggr_fn",
           "evaluate_metrics_aggr_fn"}
"""Constructor parameters fedfleet sets itself from the run settings."""


def tunable_params(cls: type[Strategy]) -> dict[str, Any]:
    """Return the strategy's own parameters and their defaults (e.g. ``proximal_mu``)."""
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items()
            if name not in MANAGED and name != "self"
            and p.kind is p.POSITIONAL_OR_KEYWORD}


def strategy_class(name: str) -> type[Strategy]:
    """Return the strategy class called ``name`` (case-insensitive).

    Raises
    ------
    ConfigError
        If there is no such strategy.
    """
    cls = STRATEGIES.get(name.lower())
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}: use one of "
                          f"{', '.join(STRATEGIES)}")
    return cls


def strategy_kwargs(settings: RunSettings) -> dict[str, Any]:
    """Return constructor arguments for the run's strategy, parameters checked.

    Raises
    ------
    ConfigError
        If a parameter is unknown to the strategy or has the wrong type.
    """
    cls = strategy_class(settings.strategy)
    allowed = tunable_params(cls)
    extra = parse_pairs(settings.strategy_params)
    for key, value in extra.items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise ConfigError(f"strategy {settings.strategy} has no parameter {key!r} "
                              f"(its parameters: {names})")
        default = allowed[key]
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
                value, (int, float)) and isinstance(default, (int, float)):
            raise ConfigError(f"strategy parameter {key}={value!r} must be a "
                              f"{type(default).__name__}")
        if isinstance(default, int) and not isinstance(default, bool) \
                and isinstance(value, float):
            raise ConfigError(f"strategy parameter {key}={value!r} must be an integer")
    # --min-clients: devices connected before a round starts. How many of them train
    # is --fraction-train of those connected, at least one (Flower samples
    # max(fraction x connected, min_train_nodes)): a floor of --min-clients made every
    # device train whenever min-clients >= fraction x connected, e.g. all 1000 of a
    # fleet run with --min-clients 1000 --fraction-train 0.1.
    return {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": settings.fraction_evaluate,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if settings.fraction_evaluate else 0,
        "min_available_nodes": settings.min_clients,
        **extra,
    }


def make_strategy(settings: RunSettings) -> Strategy:
    """Build the run's strategy (fedfleet wraps it: :mod:`fedfleet.server.run.wrapper`).

    Raises
    ------
    ConfigError
        If the strategy's constructor refuses its parameters.
    """
    cls = strategy_class(settings.strategy)
    try:
        return cls(**strategy_kwargs(settings))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"strategy {settings.strategy}: {err}") from err
