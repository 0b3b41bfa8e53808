"""fedfleet.server: coordinates rounds, aggregates weights, records every round."""
