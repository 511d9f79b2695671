"""Serving a package from NVIDIA Triton Inference Server: model repositories for it and the Python
backend that runs the toolkit's own runner inside the server (the client side is rating_edge.infer.triton)."""
