"""fedfleet.shared: models, data and settings used identically by server and clients."""

from fedfleet.shared.version import __version__

__all__ = ["__version__"]
