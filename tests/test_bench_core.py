"""Bench helpers: percentiles, ratios, the stable JSON shape, and the command end to end (tiny sizes)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rating_edge.bench.core import (
    Candidate,
    render_table,
    run_bench,
    summarize,
    time_calls,
)


def test_summarize_percentiles_and_throughput():
    t = np.arange(1, 101, dtype=float)  # 1..100 ms
    r = summarize("x", t)
    assert r["p50_ms"] == pytest.approx(50.5) and r["p95_ms"] == pytest.approx(95.05)
    assert r["p99_ms"] == pytest.approx(99.01)
    assert r["pairs_per_s"] == pytest.approx(100 / 5.050)


def test_time_calls_warms_up_first():
    calls = []
    out = time_calls(lambda: calls.append(1), iters=5, warmup=2)
    assert len(calls) == 7 and out.shape == (5,) and (out >= 0).all()


def _cand(name, delay, probs, log):
    def setup():
        log.append(f"setup {name}")

        def run():
            time.sleep(delay)
            return probs

        return run, lambda: log.append(f"teardown {name}")

    return Candidate(name, setup)


def test_run_bench_shape_ratios_and_one_model_at_a_time():
    log = []
    p = {"sh_prob": np.full((1, 5, 3, 2), 0.5, np.float32), "vs_prob": np.full((1, 5, 3, 2), 0.25, np.float32)}
    q = {k: v + 1e-3 for k, v in p.items()}
    rep = run_bench([_cand("naive", 0.02, p, log), _cand("fast", 0.005, q, log)], iters=3, warmup=1)
    assert log == ["setup naive", "teardown naive", "setup fast", "teardown fast"]
    assert set(rep) >= {"machine", "results"} and "cpu" in rep["machine"]
    assert set(rep["machine"]["host_reference_ms"]) == {"before", "after"}
    names = [r["name"] for r in rep["results"]]
    assert names == ["naive", "fast"]
    for r in rep["results"]:
        assert set(r) >= {"name", "pairs_per_s", "p50_ms", "p95_ms", "p99_ms", "ratio_to_naive"}
    assert rep["results"][0]["ratio_to_naive"] == 1.0
    assert rep["results"][1]["ratio_to_naive"] > 1.5
    assert rep["results"][1]["max_prob_diff_vs_naive"] == pytest.approx(1e-3, rel=1e-3)
    json.dumps(rep)
    render_table(rep)


def test_bench_cli_rows(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from rating_edge.cli import main
    from rating_edge.export.exporter import export_package
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.package import load_package, write_model_json
    from rating_edge.spec import EnsembleSpec

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ck = tmp_path / "ck"
        write_random_ensemble(ck, EnsembleSpec(folds=1, width=8, input_size=32, hidden=8), seed=1, share_backbones=True)
        pkg = export_package(ck, tmp_path / "pkg", fuse="stack")
        # a package with a variant gets one row per variant (the INT8 packages carry e.g. "int8-u8s8")
        meta = load_package(pkg).meta
        meta["variants"] = {"copy": [dict(meta["graphs"][0])]}
        write_model_json(pkg, meta)
        js = tmp_path / "b.json"
        assert main(["bench", str(pkg), "--reference", str(ck), "--iters", "2", "--warmup", "0",
                     "--threads", "1", "--json", str(js), "--plot", str(tmp_path / "b.png")]) == 0
        rep = json.loads(js.read_text())
        assert all(len(r["latencies_ms"]) == 2 for r in rep["results"]) and rep["date"]
        assert (tmp_path / "b.png").stat().st_size > 10_000 and (tmp_path / "b.svg").is_file()
        assert [r["name"] for r in rep["results"]] == ["naive", "none", "stack:pkg", "stack:pkg[copy]"]
        assert all(r["max_prob_diff_vs_naive"] <= 1e-4 for r in rep["results"])
        assert rep["machine"]["threads"] == 1
    finally:
        torch.set_num_threads(old)


def test_bench_runtime_overhead_cli(tmp_path):
    """`bench --runtime` alone measures the runtime's own per-frame cost and records every stage."""
    from typer.testing import CliRunner

    from rating_edge.cli import app

    out = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", "--runtime", "phantom://?seed=0&fps=30&size=640x360", "--runtime-frames", "12",
                                   "--runtime-size", "640x360", "--json", str(out)])
    assert res.exit_code == 0, res.output
    import json

    rep = json.loads(out.read_text())
    ro = rep["runtime_overhead"]
    assert ro["frames"] == 12 and ro["size"] == [640, 360]
    assert set(ro["latency_ms"]) >= {"capture", "layout", "pairing", "preprocess", "score", "render", "total"}
    assert ro["latency_ms"]["total"]["p50"] > 0
    assert rep["results"] == [] and "machine" in rep
    ref = rep["machine"]["host_reference_ms"]  # the host's own speed around the run, to compare runs by
    assert set(ref) == {"before", "after"} and all(v["resize_1080p_area"] > 0 and v["matmul_256"] > 0 for v in ref.values())
    res = CliRunner().invoke(app, ["bench"])
    assert res.exit_code != 0
