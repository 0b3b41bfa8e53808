"""fedfleet.client: the device side; trains on local data and returns only weights."""

from fedfleet.client.nodedata import NodeData

__all__ = ["NodeData"]
