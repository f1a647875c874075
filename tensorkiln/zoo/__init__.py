"""The model zoo: eight networks with fixed-seed random Gaussian weights, exported to ONNX.

::

    from tensorkiln import zoo
    path = zoo.get("resnet50")                  # cached ONNX file, exported on first use
    feeds = zoo.sample_inputs("resnet50", batch=4)

Models: alexnet, googlenet, resnet50, vgg19, mobilenetv2 (classification, 3x224x224),
bert (BERT-base-shaped encoder), lstm_nmt (OpenNMT-shaped LSTM translator), vad_lstm
(stateful LSTM voice-activity detector). ``list_models()`` describes their inputs.
Exports live in ``$TENSORKILN_CACHE/zoo/<name>-v<ZOO_VERSION>.onnx`` (default
``~/.cache/tensorkiln``) and are never committed.
"""

from tensorkiln.zoo.registry import (
    ZOO_VERSION,
    ModelInfo,
    TensorSpec,
    cache_dir,
    cached_path,
    export,
    get,
    info,
    list_models,
    module,
    sample_inputs,
)

__all__ = [
    "ZOO_VERSION",
    "ModelInfo",
    "TensorSpec",
    "cache_dir",
    "cached_path",
    "export",
    "get",
    "info",
    "list_models",
    "module",
    "sample_inputs",
]
