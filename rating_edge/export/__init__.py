"""Export: fuse the 60 networks into multi-head ONNX graphs (torch + onnx)."""
