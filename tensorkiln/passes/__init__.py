"""Graph passes. The pipeline order lives in ``pipeline.py``."""

from tensorkiln.passes.pipeline import FUSIONS, PIPELINE, PipelineResult, run_pipeline

__all__ = ["FUSIONS", "PIPELINE", "PipelineResult", "run_pipeline"]
