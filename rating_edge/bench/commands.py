"""`rating-edge bench`: naive PyTorch vs `none` vs the packages under test, batch 1, one run."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console

from rating_edge.errors import RatingEdgeError

console = Console(stderr=True)


def naive_candidate(reference, feed, threads: int):
    from rating_edge.bench.core import Candidate

    def setup():
        import torch

        from rating_edge.model.reference import load_ensemble

        torch.set_num_threads(threads)
        ref = load_ensemble(reference)
        return (lambda: ref.predict_probs(feed["gs"], feed["doppler"])), (lambda: ref.models.clear())

    return Candidate("naive", setup, backend="torch", precision="fp32")


def variant_precision(variant: str | None) -> str:
    """The arithmetic of a package graph set, from its variant name (default graphs are FP32)."""
    for p in ("int8", "fp16", "bf16"):
        if variant and variant.startswith(p):
            return p
    return "fp32"


def package_candidates(pkg, feed, name: str | None = None, backends=("ort",)) -> list:
    """One row per graph set of a package and backend: ONNX Runtime runs its default graphs and each
    of its ONNX `variants`; OpenVINO runs FP32, BF16 (where the CPU has it) and its INT8 variant."""
    from rating_edge.bench.core import Candidate
    from rating_edge.package import load_package
    from rating_edge.runtime.engines import choose_variant, make_runner

    package = load_package(pkg)
    base = name or f"{package.strategy}:{Path(pkg).name}"
    variants = package.meta.get("variants", {})
    out = []
    for backend in backends:
        if backend == "ort":
            # the default row runs what `None` picks (an INT8 package's U8S8 graph): no second row for it
            onnx_variants = [v for v in sorted(variants) if all(r["file"].endswith(".onnx") for r in variants[v])
                             and v != choose_variant(package, "ort")]
            for variant in [None] + onnx_variants:
                def setup(v=variant):
                    runner = make_runner(package, "ort", variant=v).activate()
                    return (lambda: runner.infer(feed)), runner.deactivate

                ran = variant if variant is not None else choose_variant(package, "ort")  # what `None` runs
                out.append(Candidate(base if variant is None else f"{base}[{variant}]", setup, "ort",
                                     variant_precision(ran)))
        elif backend == "openvino":
            from rating_edge.infer.openvino import bench_forms

            for prec, variant in bench_forms(package):
                def setup(p=prec, v=variant):
                    runner = make_runner(package, f"openvino:{p}", variant=v).activate()
                    return (lambda: runner.infer(feed)), runner.deactivate

                tag = f"openvino {prec}" + (f" {variant}" if variant else "")
                out.append(Candidate(f"{base} ({tag})", setup, "openvino", prec))  # no [..]: rich markup
        else:
            raise RatingEdgeError(f"bench --backend {backend!r}: use ort or openvino (TensorRT rows come from "
                                  "`python -m rating_edge.bench.tegrastats measure` on the Jetson)")
    return out


def build_candidates(packages, reference, none_pkg, feed, threads: int, workdir: Path, log,
                     backends=("ort",)) -> list:
    """naive, none, then each package. A future `--runtime` option appends its Candidate here."""
    from rating_edge.package import load_package

    cands = [naive_candidate(reference, feed, threads)]
    if none_pkg is None:
        from rating_edge.export.exporter import export_package

        log("exporting a temporary `none` package from the reference (use --none to reuse one)")
        none_pkg = export_package(reference, workdir / "none", fuse="none")
    elif load_package(none_pkg).strategy != "none":
        raise RatingEdgeError(f"--none {none_pkg}: that package's strategy is {load_package(none_pkg).strategy!r}, not 'none'")
    cands += package_candidates(none_pkg, feed, name="none")
    for p in packages:
        cands += package_candidates(p, feed, backends=backends)
    return cands


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        packages: list[Path] = typer.Argument(None, help="Model packages to measure."),
        reference: Path = typer.Option(None, "--reference", help="Reference checkpoint (the naive baseline)."),
        none_pkg: Path = typer.Option(None, "--none", help="A `none` package (default: exported to a temp folder)."),
        iters: int = typer.Option(20, help="Timed pairs per row."),
        warmup: int = typer.Option(3, help="Untimed pairs per row first."),
        json_out: Path = typer.Option(None, "--json", help="Write {machine, results} here."),
        seed: int = typer.Option(0, help="Seed of the random pair used."),
        threads: int = typer.Option(None, help="Threads for every row (PyTorch and ONNX Runtime); default: all cores."),
        runtime: str = typer.Option(None, "--runtime", help="Also measure the runtime's own cost per frame (engine "
                                    "excluded) on this source, e.g. 'phantom://?seed=0&fps=30' or a video file."),
        runtime_frames: int = typer.Option(300, help="Frames for --runtime."),
        runtime_size: str = typer.Option("1920x1080", help="Frame size WxH for --runtime."),
        backend: list[str] = typer.Option(["ort"], "--backend", help="Backends for the package rows (repeatable): "
                                          "ort, openvino (FP32, BF16 where the CPU has it, INT8 variants)."),
        no_naive: bool = typer.Option(False, "--no-naive", help="Skip the naive PyTorch and `none` rows (paper-size "
                                      "packages: saves loading two ~4 GB models; ratios are then between packages)."),
    ):
        """Pairs/s and p50/p95/p99 at batch 1 for naive PyTorch, `none` and each package, with ratios."""
        from rating_edge.bench.core import machine_info, render_table, run_bench
        from rating_edge.export.inputs import random_pairs
        from rating_edge.model.checkpoint import read_manifest
        from rating_edge.package import load_package
        from rating_edge.runtime.engines import default_threads

        if iters < 1 or warmup < 0:
            raise RatingEdgeError("--iters must be >= 1 and --warmup >= 0")
        if reference is None:
            if runtime is None:
                raise RatingEdgeError("give --reference CKPT (the naive baseline) and packages, and/or --runtime SOURCE")
            report = {"machine": machine_info(threads), "results": []}
            report["runtime_overhead"] = _runtime_overhead(runtime, runtime_frames, runtime_size)
            _finish(report, json_out)
            return
        spec = read_manifest(reference)["spec_obj"]
        for p in packages or []:
            if load_package(p).spec != spec:
                raise RatingEdgeError(f"{p}: package spec {load_package(p).spec} differs from the reference's {spec}")
        gs, dop = random_pairs(1, spec.input_size, seed)
        feed = {"gs": gs, "doppler": dop}
        if threads is not None:
            if threads < 1:
                raise RatingEdgeError("--threads must be at least 1")
            os.environ["RATING_EDGE_THREADS"] = str(threads)  # read by every OrtRunner made below
        threads = default_threads()
        with tempfile.TemporaryDirectory(prefix="rating-edge-bench-") as d:
            if no_naive:
                cands = [c for p in packages or [] for c in package_candidates(p, feed, backends=backend)]
            else:
                cands = build_candidates(packages or [], reference, none_pkg, feed, threads, Path(d), console.print,
                                         backends=backend)
            report = run_bench(cands, iters, warmup, log=console.print, threads=threads)
        console.print(render_table(report))
        if runtime is not None:
            report["runtime_overhead"] = _runtime_overhead(runtime, runtime_frames, runtime_size, spec.input_size)
        _finish(report, json_out)


def _runtime_overhead(source: str, frames: int, size: str, input_size: int = 224) -> dict:
    """The runtime's own per-frame cost next to the engine rows (its target is p95 <= 10 ms at 1080p)."""
    from rich.table import Table

    from rating_edge.runtime.overhead import measure_runtime_overhead

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise RatingEdgeError(f"--runtime-size {size!r}: expected WxH, e.g. 1920x1080") from None
    if frames < 1:
        raise RatingEdgeError("--runtime-frames must be at least 1")
    console.print(f"bench runtime: {frames} frames of {w}x{h} from {source} (engine excluded)")
    res = measure_runtime_overhead(source, frames=frames, size=(w, h), input_size=input_size)
    t = Table(title=f"runtime overhead per {w}x{h} frame, engine excluded ({res['frames']} frames, "
                    f"{res['pairs']} pairs, {res['cpu_ms_per_frame']:.1f} CPU ms/frame)")
    for col in ("stage", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, pc in res["latency_ms"].items():
        t.add_row(stage, *("-" if pc[k] is None else f"{pc[k]:.2f}" for k in ("p50", "p95", "p99")))
    console.print(t)
    return res


def _finish(report: dict, json_out) -> None:
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")
