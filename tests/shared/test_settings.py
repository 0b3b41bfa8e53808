"""Run settings: validation and the round trip through Flower's run config."""

from __future__ import annotations

import pytest

from fedfleet.shared.errors import ConfigError
from fedfleet.shared.settings import RunSettings, parse_pairs, parse_shape
from fedfleet.shared.version import compatible


def test_run_config_round_trip() -> None:
    """Settings survive conversion to run config and back."""
    settings = RunSettings(num_rounds=3, strategy="fedprox",
                           strategy_params="proximal_mu=0.1", input_shape="28,28,1")
    config = settings.to_run_config()
    assert config["num-rounds"] == 3 and config["strategy-params"] == "proximal_mu=0.1"
    assert RunSettings.from_run_config(config) == settings


def test_from_run_config_converts_types_and_ignores_unknown_keys() -> None:
    """Ints given as floats and foreign keys are handled."""
    settings = RunSettings.from_run_config({"num-rounds": 4, "learning-rate": 1,
                                            "other": "x"})
    assert settings.num_rounds == 4 and settings.learning_rate == 1.0
    with pytest.raises(ConfigError, match="num-rounds"):
        RunSettings.from_run_config({"num-rounds": "many"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_rounds": 0}, "num-rounds"),
        ({"fraction_train": 0.0}, "fraction-train"),
        ({"partitioning": "sorted"}, "partitioning"),
        ({"input_shape": "8,x"}, "input-shape"),
        ({"strategy_params": "oops"}, "key=value"),
        ({"num_classes": 1}, "num-classes"),
        ({"round_deadline": "adaptive"}, "round-deadline must be one of fixed, paced"),
        ({"round_pace_margin": 0.5}, "round-pace-margin"),
        ({"round_pace_cap": 0.0}, "round-pace-cap"),
        ({"straggler_rounds": 0}, "straggler-rounds"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd, not 'rmsprop'"),
        ({"optimizer": "sgd", "momentum": 1.0}, r"momentum must be in \[0, 1\), not 1"),
        ({"optimizer": "sgd", "momentum": -0.1}, r"momentum must be in \[0, 1\)"),
        ({"momentum": 0.9}, "momentum 0.9 needs optimizer sgd .*: set optimizer sgd, "
                            "or momentum 0"),
    ],
)
def test_invalid_settings_name_the_setting(change: dict[str, object], message: str
                                           ) -> None:
    """Every bad value is reported under its run-config name."""
    with pytest.raises(ConfigError, match=message):
        RunSettings().replace(**change)


def test_parsers() -> None:
    """Shapes and key=value lists parse to typed values."""
    assert parse_shape("28x28x1") == (28, 28, 1)
    assert parse_pairs("proximal_mu=0.1, num-malicious-nodes=1,flag=true,name=x") == {
        "proximal_mu": 0.1, "num_malicious_nodes": 1, "flag": True, "name": "x"}


def test_version_compatibility_is_major_minor() -> None:
    """Patch releases mix; minor releases do not."""
    assert compatible("0.1.0", "0.1.7")
    assert not compatible("0.2.0", "0.1.0")


def test_the_paced_deadline_travels_in_the_run_config() -> None:
    """The deadline settings go to Flower's run config and come back typed."""
    settings = RunSettings(round_deadline="paced", round_pace_cap=4.0, straggler_rounds=5)
    config = settings.to_run_config()
    assert (config["round-deadline"], config["round-pace-margin"]) == ("paced", 1.5)
    assert RunSettings.from_run_config(config) == settings
    assert RunSettings().round_deadline == "fixed"


def test_the_optimizer_travels_in_the_run_config_and_defaults_to_adam() -> None:
    """Optimizer and momentum go out as run-config keys and come back typed."""
    # Prepare
    settings = RunSettings(optimizer="sgd", momentum=0.9, learning_rate=0.05)
    # Execute
    config = settings.to_run_config()
    # Assert
    assert (config["optimizer"], config["momentum"]) == ("sgd", 0.9)
    assert RunSettings.from_run_config(config) == settings
    assert RunSettings.from_run_config({"optimizer": "sgd", "momentum": 0}).momentum == 0.0
    assert (RunSettings().optimizer, RunSettings().momentum) == ("adam", 0.0)
    older = {k: v for k, v in RunSettings().to_run_config().items()
             if k not in ("optimizer", "momentum")}  # a run config without the keys
    assert RunSettings.from_run_config(older) == RunSettings()
