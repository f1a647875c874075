"""CPU backend: ATen kernels for every supported ONNX op."""
