"""fedfleet.client: the device side; trains on local data and returns only weights."""

from fedfleet.client.training import LocalTrainer, NodeData

__all__ = ["LocalTrainer", "NodeData"]
