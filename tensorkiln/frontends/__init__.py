"""Model importers (ONNX; PyTorch through ONNX export)."""

from tensorkiln.frontends.onnx_import import import_onnx, load_model

__all__ = ["import_onnx", "load_model"]
