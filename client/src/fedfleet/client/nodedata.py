"""Where a device's data is: the node config fedfleet gives each SuperNode.

Kept free of numpy and TensorFlow so the processes that only pass it on stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedfleet.shared.constants import DEFAULT_DATASET
from fedfleet.shared.errors import ConfigError


@dataclass(frozen=True)
class NodeData:
    """Where this device's data is, from the SuperNode's ``--node-config``."""

    data_path: str = DEFAULT_DATASET
    partition_id: int = -1
    num_partitions: int = 1
    label_column: str = "label"
    class_names: str = ""

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> NodeData:
        """Read the node config keys fedfleet uses (``data-path``, ``partition-id``, ...)."""
        try:
            return cls(
                data_path=str(config.get("data-path", DEFAULT_DATASET)),
                partition_id=int(config.get("partition-id", -1)),
                num_partitions=int(config.get("num-partitions", 1)),
                label_column=str(config.get("label-column", "label")),
                class_names=str(config.get("class-names", "")),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad node config {dict(config)}: {err}") from err

    def to_node_config(self) -> str:
        """Return the ``--node-config`` string (TOML values) for ``flower-supernode``."""
        items: list[str] = [f"data-path={_toml_str(self.data_path)}"]
        if self.partition_id >= 0:
            items += [f"partition-id={self.partition_id}",
                      f"num-partitions={self.num_partitions}"]
        if self.label_column != "label":
            items.append(f"label-column={_toml_str(self.label_column)}")
        if self.class_names:
            items.append(f"class-names={_toml_str(self.class_names)}")
        return " ".join(items)

    @property
    def class_list(self) -> list[str] | None:
        """Return ``class_names`` as a list, or None when not given."""
        return [n.strip() for n in self.class_names.split(",") if n.strip()] or None


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
