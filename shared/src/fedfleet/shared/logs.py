"""The ``fedfleet`` logger, made visible in processes Flower starts (ServerApp, ClientApp)."""

from __future__ import annotations

import logging

LOGGER_NAME = "fedfleet"


def get_logger() -> logging.Logger:
    """Return the fedfleet logger; give it a console handler if nothing else shows it."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fedfleet %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger
