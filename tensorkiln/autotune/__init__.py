"""Kernel auto-tuning: time each layer's candidate tactics on this machine, keep the fastest."""

from tensorkiln.autotune.cache import TimingCache, default_cache_path, merge_caches
from tensorkiln.autotune.tuner import TuneRecord, tune_graph

__all__ = ["TimingCache", "TuneRecord", "default_cache_path", "merge_caches", "tune_graph"]
