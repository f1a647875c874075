"""Graph passes. The pipeline order lives in ``pipeline.py``."""

from tensorkiln.passes.pipeline import PIPELINE, run_pipeline

__all__ = ["PIPELINE", "run_pipeline"]
