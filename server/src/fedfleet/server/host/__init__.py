"""The host: ``fedfleet server`` and what runs beside the SuperLink, outside any run."""
