"""tensorkiln: build fast inference engines from ONNX models, run and serve them."""

from __future__ import annotations

__version__ = "0.1.0"

from tensorkiln.engine import BuildConfig, Engine, TensorSpec, build
from tensorkiln.engine.fileformat import load_engine as load
from tensorkiln.errors import (
    EngineFileError,
    FeedError,
    InternalError,
    KernelError,
    ModelError,
    OptionError,
    TensorkilnError,
    UnsupportedOpError,
    UserError,
)

__all__ = [
    "BuildConfig",
    "Engine",
    "EngineFileError",
    "FeedError",
    "InternalError",
    "KernelError",
    "ModelError",
    "OptionError",
    "TensorSpec",
    "TensorkilnError",
    "UnsupportedOpError",
    "UserError",
    "__version__",
    "build",
    "load",
]
