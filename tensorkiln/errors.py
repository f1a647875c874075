"""Error types.

``UserError`` and its subclasses are raised for the user's mistakes (bad model, bad
feed, bad option, corrupt engine file). ``InternalError`` means a bug in tensorkiln.
"""

from __future__ import annotations


class TensorkilnError(Exception):
    """Base class of every error tensorkiln raises on purpose."""


class UserError(TensorkilnError):
    """Something the user asked for or handed in is wrong; the message says how to fix it."""


class ModelError(UserError):
    """The model file or graph is malformed."""


class UnsupportedOpError(UserError):
    """The model uses operators this backend cannot run (all of them are listed)."""


class FeedError(UserError):
    """Inputs passed to ``Engine.run`` do not match the engine's inputs."""


class EngineFileError(UserError):
    """An engine file is corrupt, truncated, of another format version or not an engine."""


class OptionError(UserError):
    """A build or run option has an invalid value."""


class KernelError(UserError):
    """A kernel failed at run time on the given data (names the step and its ONNX node)."""


class InternalError(TensorkilnError):
    """A bug in tensorkiln. Please report it with the model that triggered it."""
