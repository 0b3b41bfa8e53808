"""Errors that carry a message meant for the person running fedfleet."""


class FedfleetError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class DataError(FedfleetError):
    """The local dataset is missing, unreadable or does not fit the model."""


class ConfigError(FedfleetError):
    """A run setting or option has a value fedfleet cannot use."""


class ModelMismatchError(FedfleetError):
    """Weights do not fit the model (keys, shapes or dtypes differ)."""


class VersionMismatchError(FedfleetError):
    """Server and client run fedfleet releases that do not work together."""
