#!/usr/bin/env python
"""The GPU check: on a machine with an NVIDIA GPU and TensorRT, build FP16 and INT8 engines of an
ensemble (paper preset by default), verify them against ONNX Runtime FP32 and time them.

    python tests/gpu/run_gpu_checks.py [--preset paper] [--pairs 48] [--work /tmp/rating_gpu] [--json out.json]

Steps (each reuses the previous step's output in --work when present, so a rerun is quick):
random ensemble -> `stack` package -> phantom calibration set -> INT8 package (gate) -> engines
(fp16, int8) -> agreement vs ORT FP32 on phantom pairs not used for calibration -> latency p50/p99
at batch 1 (plain and CUDA-graph replay) and throughput at --batch. Prints one table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _time_runner(runner, gs, dop, iters: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        runner.infer({"gs": gs, "doppler": dop})
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        runner.infer({"gs": gs, "doppler": dop})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--work", default="/tmp/rating_gpu_checks")
    ap.add_argument("--pairs", type=int, default=48, help="phantom calibration pairs")
    ap.add_argument("--verify-pairs", type=int, default=16)
    ap.add_argument("--gate", type=float, default=0.9, help="INT8 gate (random ensembles sit near thresholds)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--chunk", default=None, help="exporter chunk (members per stack)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    try:
        import tensorrt as trt
    except ImportError:
        print("SKIP: TensorRT is not installed")
        return 0
    from rating_edge.calibration.calibset import write_calib
    from rating_edge.calibration.collect import collect_phantom
    from rating_edge.calibration.gate import agreement_report
    from rating_edge.calibration.quantize import quantize_package
    from rating_edge.calibration.trt_build import build_engine
    from rating_edge.export.exporter import export_package
    from rating_edge.infer.cuda_buffers import get_backend
    from rating_edge.infer.ort import OrtRunner
    from rating_edge.infer.trt import TrtRunner
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.package import load_package
    from rating_edge.spec import preset

    try:
        backend = get_backend()
        info = backend.device_info(0)
    except Exception as e:  # noqa: BLE001 - no CUDA binding or no usable GPU: nothing to check here
        print(f"SKIP: no CUDA device ({e})")
        return 0
    if hasattr(backend, "close"):  # pycuda pushed a context; the runners open their own
        backend.close()
    _say(f"GPU {info['gpu']} (sm {info['compute_capability']}), TensorRT {trt.__version__}")
    spec = preset(a.preset)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ens, pkg_dir, cal, q_dir = work / "ens", work / "pkg", work / "calib", work / "pkg-int8"
    if not (ens / "ensemble.json").is_file():
        _say(f"random {a.preset} ensemble")
        write_random_ensemble(ens, spec, 0)
    if not (pkg_dir / "model.json").is_file():
        _say("export stack package")
        chunk = int(a.chunk) if a.chunk and a.chunk.isdigit() else a.chunk
        export_package(ens, pkg_dir, fuse="stack", chunk=chunk, log=_say)
    params = load_package(pkg_dir).preprocess
    if not (cal / "calib.json").is_file():
        _say(f"{a.pairs} phantom calibration pairs")
        gs, dop, lab, src = collect_phantom(a.pairs, params, seed=0)
        write_calib(cal, gs, dop, lab, params, src)
    if not (q_dir / "model.json").is_file():
        _say("quantize (ORT Q/DQ + U8S8, gated)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_package(pkg_dir, cal, q_dir, method="entropy", gate=a.gate, fallback=False, log=_say)
    rows = []
    vgs, vdop, _, _ = collect_phantom(a.verify_pairs, params, seed=12345)  # not in the calibration set
    _say("ONNX Runtime FP32 reference")
    with OrtRunner(load_package(pkg_dir), threads=None) as r:
        ref = {}
        for i in range(len(vgs)):
            o = r.infer({"gs": vgs[i:i + 1], "doppler": vdop[i:i + 1]})
            for k, v in o.items():
                ref.setdefault(k, []).append(v)
        ref = {k: np.concatenate(v) for k, v in ref.items()}
        ort_ms = _time_runner(r, vgs[:1], vdop[:1], max(3, a.iters // 10), warmup=1)
    rows.append({"name": "ort-fp32-cpu", "agreement": 1.0, "p50_ms": float(np.percentile(ort_ms, 50)),
                 "p99_ms": float(np.percentile(ort_ms, 99)), "pairs_per_s": 1e3 / float(np.mean(ort_ms))})
    for precision, pdir in (("fp16", pkg_dir), ("int8", q_dir)):
        _say(f"build {precision} engine")
        hash_before = load_package(pdir).model_hash
        t = time.perf_counter()
        build_engine(pdir, precision=precision, workspace_mb=8192, timing_cache=work / "timing.cache",
                     max_batch=a.batch, log=_say)
        build_s = time.perf_counter() - t
        pkg = load_package(pdir)
        if pkg.model_hash != hash_before:  # engines go to engines.json; the identity must not move
            raise SystemExit(f"build changed the model hash of {pdir} ({hash_before} -> {pkg.model_hash})")
        for graph in (False, True):
            with TrtRunner(pkg, precision=precision, cuda_graph=graph) as r:
                outs = {}
                for i in range(len(vgs)):
                    o = r.infer({"gs": vgs[i:i + 1], "doppler": vdop[i:i + 1]})
                    for k, v in o.items():
                        outs.setdefault(k, []).append(v)
                outs = {k: np.concatenate(v) for k, v in outs.items()}
                rep = agreement_report(ref, outs, spec)
                ms = _time_runner(r, vgs[:1], vdop[:1], a.iters)
                bgs = np.repeat(vgs[:1], a.batch, 0)
                bdop = np.repeat(vdop[:1], a.batch, 0)
                bms = _time_runner(r, bgs, bdop, max(5, a.iters // 5))
            rows.append({"name": f"trt-{precision}{'-graph' if graph else ''}",
                         "agreement": rep["combined_agreement"], "member_min": rep["member_agreement_min"],
                         "max_abs_prob_diff": rep["max_abs_prob_diff"], "heat_corr_min": rep.get("heat_gs_corr_min"),
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "pairs_per_s": a.batch * 1e3 / float(np.mean(bms)), "build_s": round(build_s, 1)})
    print()
    print(f"{a.preset} preset, stack package, {info['gpu']}, TensorRT {trt.__version__}; agreement = combined-score "
          f"agreement with ORT FP32 on {len(vgs)} held-out phantom pairs; latency at batch 1; throughput at batch "
          f"{a.batch}")
    print(f"{'name':<18}{'agree':>7}{'mem.min':>9}{'max|dp|':>9}{'p50 ms':>9}{'p99 ms':>9}{'pairs/s':>10}")
    for r in rows:
        print(f"{r['name']:<18}{r['agreement']:>7.3f}{r.get('member_min', 1.0):>9.3f}"
              f"{r.get('max_abs_prob_diff', 0.0):>9.4f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['pairs_per_s']:>10.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "trt_version": trt.__version__, "results": rows},
                                           indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
