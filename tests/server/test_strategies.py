"""Strategies by name, with parameters checked before a run starts."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedProx, FedTrimmedAvg, Krum, MultiKrum

from fedfleet.server.run.strategies import STRATEGIES, make_strategy, tunable_params
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.settings import RunSettings


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_builds_with_defaults(name: str) -> None:
    """Each named strategy builds with the run's client minimums."""
    strategy = make_strategy(RunSettings(strategy=name, min_clients=3))
    assert strategy.min_available_nodes == 3  # type: ignore[attr-defined]


def test_parameters_reach_the_strategy() -> None:
    """Typed parameters are passed to the constructor."""
    prox = make_strategy(RunSettings(strategy="fedprox",
                                     strategy_params="proximal_mu=0.3"))
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.3
    trim = make_strategy(RunSettings(strategy="FedTrimmedAvg", strategy_params="beta=0.1"))
    assert isinstance(trim, FedTrimmedAvg) and trim.beta == 0.1
    krum = make_strategy(RunSettings(strategy="krum",
                                     strategy_params="num_malicious_nodes=1"))
    assert isinstance(krum, Krum) and krum.num_malicious_nodes == 1
    multi = make_strategy(RunSettings(
        strategy="multikrum", strategy_params="num_malicious_nodes=1,num_nodes_to_select=3"))
    assert isinstance(multi, MultiKrum) and multi.num_nodes_to_select == 3


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedavg", "proximal_mu=0.1", "fedavg has no parameter 'proximal_mu'"),
        ("krum", "num_malicious_nodes=0.5", "must be an integer"),
        ("fedprox", "proximal_mu=lots", "must be a float"),
        ("fedsgd", "", "unknown strategy 'fedsgd'"),
    ],
)
def test_bad_parameters_are_refused(name: str, params: str, message: str) -> None:
    """Unknown names, parameters and types are errors that name them."""
    with pytest.raises(ConfigError, match=message):
        make_strategy(RunSettings(strategy=name, strategy_params=params))


def test_tunable_params_exclude_what_fedfleet_sets() -> None:
    """Client counts and record keys are not user parameters."""
    assert set(tunable_params(FedProx)) == {"proximal_mu"}
