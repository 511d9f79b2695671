"""The runtime must stay small: the numpy/OpenCV foundation modules never import torch."""
import subprocess
import sys

MODULES = ["rating_edge.preprocess", "rating_edge.preprocess_official", "rating_edge.scoring", "rating_edge.package",
           "rating_edge.dataset", "rating_edge.spec", "rating_edge.heatmap", "rating_edge.infer", "rating_edge.infer.ort",
           "rating_edge.infer.trt", "rating_edge.threads"]


def test_foundation_does_not_import_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES)
            + "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
            + "assert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
