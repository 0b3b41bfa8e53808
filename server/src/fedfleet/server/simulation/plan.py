"""A simulation's plan: each virtual device's data and when it is online.

The plan travels to both apps as one run-config entry (:data:`RUN_CONFIG_KEY`, JSON).
Flower gives a virtual device only its ``partition-id`` and ``num-partitions``; the
plan turns that index into fedfleet's node config (``data-path``, ``partition-id``,
``num-partitions``, ``label-column``, ``class-names``). Only the simulation's ClientApp
reads it: a real device's data is never chosen by the server.

Availability: a device is online in round ``r`` when the trace (``--availability``)
says so and it is not among the ``--unavailable`` share drawn offline for that round
(seeded, so a run can be repeated). The trace format (CSV or JSON) is in
:func:`read_availability` and ``docs/simulation.md``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.shared.errors import ConfigError

RUN_CONFIG_KEY = "simulation"
"""The run-config entry holding the plan (JSON)."""

QUERY_ACTION = "simulated_device"
"""``query.simulated_device``: the simulation's ClientApp answers with its device index."""

DEVICE_KEY = "device"

PLACEMENT_KEY = "simulated-placement"
"""Reply entry (ConfigRecord) naming the Ray node, actor and device that did the work;
the availability grid takes it out of the reply and tallies it in ``simulation.json``."""


@dataclass(frozen=True)
class SimulationPlan:
    """Which data each of ``devices`` virtual devices holds, and when it is online."""

    devices: int
    data: tuple[str, ...]
    """One data path for all devices (each holds partition i of ``devices``), or one
    path per device (``--device-data``: each holds its whole entry)."""
    label_column: str = "label"
    class_names: str = ""
    cpus: int = 1
    """CPUs per virtual device (Ray's ``num_cpus`` and TensorFlow's thread pools; Flower
    1.42's simulation config takes whole CPUs only)."""
    gpus: float = 0.0
    unavailable: float = 0.0
    """Share of the devices drawn offline in each round."""
    availability: Mapping[int, tuple[bool, ...]] = field(default_factory=dict)
    """Per-device trace: device -> online in rounds 1..R (repeated after R); devices
    not in it are online whenever they are not drawn offline."""
    seed: int = 42
    per_device: bool = False
    """True when ``data`` has one entry per device (``--device-data``)."""

    def __post_init__(self) -> None:
        """Reject plans that cannot run, naming the option."""
        if self.devices < 1:
            raise ConfigError(f"--devices must be at least 1, got {self.devices}")
        if len(self.data) != (self.devices if self.per_device else 1):
            raise ConfigError(f"the plan names {len(self.data)} data paths for "
                              f"{self.devices} devices")
        if not 0 <= self.unavailable < 1:
            raise ConfigError(f"--unavailable must be in [0, 1), got {self.unavailable}")
        if self.cpus < 1 or self.gpus < 0:
            raise ConfigError("--cpus-per-device must be >= 1 and --gpus-per-device >= 0")
        for device in self.availability:
            if not 0 <= device < self.devices:
                raise ConfigError(f"the availability trace names device {device}; "
                                  f"devices are 0..{self.devices - 1}")

    @property
    def has_churn(self) -> bool:
        """Whether some device may be offline in some round."""
        return self.unavailable > 0 or bool(self.availability)

    def node_config(self, device: int) -> dict[str, bool | float | int | str]:
        """Return fedfleet's node config for virtual device ``device`` (0-based)."""
        if not 0 <= device < self.devices:
            raise ConfigError(f"virtual device {device} is outside 0..{self.devices - 1}")
        config: dict[str, bool | float | int | str] = {"label-column": self.label_column,
                                        "class-names": self.class_names}
        if self.per_device:
            config["data-path"] = self.data[device]
        else:
            config.update({"data-path": self.data[0], "partition-id": device,
                           "num-partitions": self.devices})
        return config

    def offline(self, run_round: int) -> set[int]:
        """Return the devices that are offline in ``run_round`` (1-based)."""
        down: set[int] = set()
        for device, trace in self.availability.items():
            if not trace[(run_round - 1) % len(trace)]:
                down.add(device)
        count = int(round(self.unavailable * self.devices))
        if count:
            rng = np.random.default_rng([self.seed, run_round])
            down |= {int(d) for d in rng.choice(self.devices, size=count, replace=False)}
        return down

    def fewest_online(self, num_rounds: int) -> tuple[int, int]:
        """Return ``(round, devices online)`` of the round with the fewest online."""
        counts = [(self.devices - len(self.offline(r)), r) for r in range(1, num_rounds + 1)]
        online, rnd = min(counts)
        return rnd, online

    def to_json(self) -> str:
        """Return the plan as the JSON the run config carries."""
        return json.dumps({
            "devices": self.devices, "data": list(self.data),
            "per_device": self.per_device, "label_column": self.label_column,
            "class_names": self.class_names, "cpus": self.cpus, "gpus": self.gpus,
            "unavailable": self.unavailable, "seed": self.seed,
            "availability": {str(d): [int(v) for v in t]
                             for d, t in sorted(self.availability.items())},
        }, separators=(",", ":"))

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> SimulationPlan:
        """Read the plan from a run config.

        Raises
        ------
        ConfigError
            If the run config carries no plan or a malformed one.
        """
        raw = config.get(RUN_CONFIG_KEY)
        if not isinstance(raw, str) or not raw:
            raise ConfigError("this run carries no simulation plan: it was not "
                              "submitted by 'fedfleet simulate'")
        try:
            value = json.loads(raw)
            return cls(
                devices=int(value["devices"]), data=tuple(str(p) for p in value["data"]),
                per_device=bool(value["per_device"]),
                label_column=str(value["label_column"]),
                class_names=str(value["class_names"]), cpus=int(value["cpus"]),
                gpus=float(value["gpus"]), unavailable=float(value["unavailable"]),
                seed=int(value["seed"]),
                availability={int(d): tuple(bool(v) for v in t)
                              for d, t in value["availability"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ConfigError(f"malformed simulation plan in the run config: {err}") \
                from err


def read_availability(path: Path) -> dict[int, tuple[bool, ...]]:
    """Read a per-device, per-round availability trace (``--availability FILE``).

    CSV: a header ``device,1,2,...,R`` (round numbers from 1), then one row per
    device: its index (0-based) and 1 (online) or 0 (offline) for each round.
    JSON: an object mapping each device index (a string) to a list of R values
    (1/0 or true/false). Every listed device has the same R; rounds after R repeat
    the trace from round 1; devices not listed are always online.

    Raises
    ------
    ConfigError
        With one line naming the file and what is wrong in it.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the availability file {path}: {err}") from None
    try:
        if path.suffix.lower() == ".json":
            trace = _trace_from_json(text)
        elif path.suffix.lower() == ".csv":
            trace = _trace_from_csv(text)
        else:
            raise ValueError("use a .csv or .json file")
    except ValueError as err:
        raise ConfigError(f"availability file {path}: {err}") from None
    if not trace:
        raise ConfigError(f"availability file {path}: it lists no device")
    lengths = {len(t) for t in trace.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(f"availability file {path}: every device needs the same "
                          f"number (at least 1) of rounds, found {sorted(lengths)}")
    return trace


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return value.strip() == "1"
    raise ValueError(f"{where}: {value!r} is not 1 (online) or 0 (offline)")


def _device(value: Any, where: str) -> int:
    try:
        device = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: device {value!r} is not an index (0, 1, ...)") \
            from None
    if device < 0:
        raise ValueError(f"{where}: device {device} is negative")
    return device


def _trace_from_json(text: str) -> dict[int, tuple[bool, ...]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError('expected an object such as {"0": [1, 0, 1]}')
    trace: dict[int, tuple[bool, ...]] = {}
    for key, rounds in value.items():
        device = _device(key, f"device {key!r}")
        if not isinstance(rounds, list):
            raise ValueError(f"device {key}: expected a list of 1/0 per round")
        if device in trace:
            raise ValueError(f"device {device} is listed twice")
        trace[device] = tuple(_flag(v, f"device {key}, round {i + 1}")
                              for i, v in enumerate(rounds))
    return trace


def _trace_from_csv(text: str) -> dict[int, tuple[bool, ...]]:
    rows = [row for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]
    if not rows:
        raise ValueError("the file is empty")
    header = [c.strip() for c in rows[0]]
    expected = ["device", *(str(r) for r in range(1, len(header)))]
    if header != expected or len(header) < 2:
        raise ValueError("the header must be device,1,2,...,R (round numbers), got "
                         f"{','.join(header)}")
    trace: dict[int, tuple[bool, ...]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"line {line}: {len(row)} columns, the header has "
                             f"{len(header)}")
        device = _device(row[0], f"line {line}")
        if device in trace:
            raise ValueError(f"line {line}: device {device} is listed twice")
        trace[device] = tuple(_flag(v, f"line {line}, round {i + 1}")
                              for i, v in enumerate(row[1:]))
    return trace
