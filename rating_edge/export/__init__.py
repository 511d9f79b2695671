"""Export: fuse the 60 networks into multi-head ONNX graphs (torch + onnx).

`export_package` is resolved lazily so that importing this package (e.g. for the CLI's --help) does
not pull in onnx or torch.
"""


def __getattr__(name):
    if name == "export_package":
        from rating_edge.export.exporter import export_package

        return export_package
    raise AttributeError(f"module 'rating_edge.export' has no attribute {name!r}")
