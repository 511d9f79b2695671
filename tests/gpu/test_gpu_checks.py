"""Runs the GPU check script on the tiny preset where a GPU and TensorRT exist; skips cleanly elsewhere."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def _gpu_ready() -> bool:
    try:
        import tensorrt  # noqa: F401

        from rating_edge.infer.cuda_buffers import get_backend

        get_backend().device_info(0)
    except Exception:  # noqa: BLE001 - any missing piece means: no GPU check here
        return False
    return True


@pytest.mark.skipif(not _gpu_ready(), reason="needs an NVIDIA GPU, TensorRT and cuda-python or pycuda")
def test_gpu_checks_tiny(tmp_path, capsys):
    pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parent))
    import run_gpu_checks

    assert run_gpu_checks.main(["--preset", "tiny", "--work", str(tmp_path), "--pairs", "24", "--verify-pairs", "8",
                                "--iters", "10", "--batch", "2", "--gate", "0.5", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "trt-fp16" in out and "trt-int8" in out
    import json

    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert rows["trt-fp16"]["agreement"] >= 0.9 and rows["trt-fp16"]["max_abs_prob_diff"] < 0.05
    assert rows["trt-fp16-graph"]["max_abs_prob_diff"] == pytest.approx(rows["trt-fp16"]["max_abs_prob_diff"], abs=1e-3)
