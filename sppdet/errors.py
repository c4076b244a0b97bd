"""Exceptions that carry a message meant for the user (file and reason, no traceback)."""


class SppdetError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with status 1."""


class DataError(SppdetError):
    """Bad input data: a missing file, malformed XML, an unknown class, a bad box."""


class ConfigMismatchError(SppdetError):
    """A cache or model directory was made with another configuration."""


class ModelFormatError(SppdetError):
    """A model directory is missing, incomplete, or of an unknown format version."""


class ArgumentError(SppdetError, ValueError):
    """An invalid argument to a library function (also a ValueError, for Python callers)."""


class WeightsError(ConfigMismatchError):
    """Backbone weights that are missing or are not the ones a model or cache was made with."""


class InvalidValueError(ModelFormatError, DataError):
    """A value in a file sppdet reads (a model's config.json, a cache manifest) has the wrong
    type, range or shape; the message names the file and the key."""
