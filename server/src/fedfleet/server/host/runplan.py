"""A run's settings from what the operator asked for.

Options name only what differs from the defaults; the model's input shape and class
count come from the server's test set when not given, and everything that would fail
mid-run (an unknown strategy parameter, a model module that does not import) fails
here, before the run is submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedfleet.server.run.strategies import strategy_kwargs
from fedfleet.shared.data import load_dataset
from fedfleet.shared.settings import RunSettings
from fedfleet.shared.version import __version__


def plan_run(values: dict[str, Any], output_dir: Path) -> RunSettings:
    """Return checked settings from ``values`` (RunSettings field names).

    ``input_shape`` and ``num_classes`` may be None: they are then read from the
    ``eval_data`` test set.

    Raises
    ------
    ConfigError
        If a value is invalid (the message names the setting).
    """
    values = dict(values, fedfleet_version=__version__,
                  output_dir=str(output_dir.resolve()))
    shape, classes = values.pop("input_shape", None), values.pop("num_classes", None)
    if (shape is None or classes is None) and values.get("eval_data"):
        test = load_dataset(values["eval_data"], split="test")
        shape = shape or ",".join(str(d) for d in test.sample_shape)
        classes = classes or int(test.y.max()) + 1
    if shape is not None:
        values["input_shape"] = shape
    if classes is not None:
        values["num_classes"] = classes
    settings = RunSettings(**values)
    from fedfleet.shared.models import resolve_builder  # Keras: only when planning a run

    strategy_kwargs(settings)  # unknown strategy parameters fail here, not mid-run
    resolve_builder(settings.model)
    return settings
