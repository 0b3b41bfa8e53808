"""Stand-ins for Flower's ``Grid`` in tests that drive a strategy or a policy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid


class StubGrid(Grid):
    """A grid on which every call does nothing; a test's subclass adds what it needs."""

    def set_run(self, run: Any) -> None:
        return None

    @property
    def run(self) -> Any:
        return None

    def create_message(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def get_node_ids(self) -> Any:
        return None

    def push_messages(self, messages: Iterable[Message]) -> Any:
        return None

    def pull_messages(self, message_ids: Iterable[str]) -> Any:
        return None

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Any:
        return None


class NodeGrid(StubGrid):
    """A grid that knows only which nodes are connected."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)
