"""The fedfleet version and the rule for which server and client versions work together."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedfleet-shared")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def compatible(server_version: str, client_version: str) -> bool:
    """Tell whether a client at ``client_version`` may train for ``server_version``.

    Releases with the same major and minor number share the model and wire format;
    patch releases are interchangeable.
    """
    return server_version.split(".")[:2] == client_version.split(".")[:2]
