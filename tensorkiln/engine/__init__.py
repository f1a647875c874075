"""Engines: build, save, load."""

from tensorkiln.engine.builder import build
from tensorkiln.engine.engine import BuildConfig, Engine
from tensorkiln.engine.fileformat import load_engine
from tensorkiln.engine.specs import TensorSpec

__all__ = ["BuildConfig", "Engine", "TensorSpec", "build", "load_engine"]
