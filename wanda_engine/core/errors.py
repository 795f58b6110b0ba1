"""The engine's user-facing errors: each carries one sentence saying what was wrong.

The CLI prints `str(error)` and exits non-zero; the app shows it on the page. Anything
that is not an EngineError is a bug and keeps its traceback.
"""


class EngineError(Exception):
    """Base class: bad input or an unavailable resource, explained in one sentence."""


class ConfigError(EngineError, ValueError):
    """A configuration value is invalid; the message names the field."""


class ModelLoadError(EngineError):
    """A model could not be loaded, or has no decoder blocks / prunable linears."""


class DataError(EngineError):
    """Text or token data could not be loaded or is unsuitable."""


class PruneCancelled(EngineError):
    """Pruning was cancelled between blocks; the model is partially pruned."""


class NumericalError(EngineError):
    """NaN or Inf in weights or activations; the message names the block and layer."""


class OutOfMemory(EngineError):
    """Memory ran out (host or accelerator); the message says where and what to try instead."""
