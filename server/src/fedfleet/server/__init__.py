"""fedfleet.server: coordinates rounds, aggregates weights, records every round."""

from fedfleet.server.strategies import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "make_strategy"]
