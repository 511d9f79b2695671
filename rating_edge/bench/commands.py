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
    from rating_edge.infer import choose_variant, make_runner
    from rating_edge.package import load_package

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
        runtime_size: str = typer.Option("1920x1080", help="Frame size WxH for --runtime (and --soak)."),
        soak: float = typer.Option(None, "--soak", help="Soak test instead: MINUTES of the live phantom at 30 "
                                   "fps through the run pipeline with the package given; RSS, open files, "
                                   "threads and queue sizes at the start (after warm-up) and the end."),
        backend: list[str] = typer.Option(["ort"], "--backend", help="Backends for the package rows (repeatable): "
                                          "ort, openvino (FP32, BF16 where the CPU has it, INT8 variants); "
                                          "for --soak one of ort, trt, openvino[:PREC], auto."),
        no_naive: bool = typer.Option(False, "--no-naive", help="Skip the naive PyTorch and `none` rows (paper-size "
                                      "packages: saves loading two ~4 GB models; ratios are then between packages)."),
        plot: Path = typer.Option(None, "--plot", help="Also draw the rows' latency distributions and pairs/s "
                                  "(FILE.png and FILE.svg; needs the plots extra)."),
        triton: str = typer.Option(None, "--triton", help="Load test instead: the Triton server at this URL "
                                   "(grpc://127.0.0.1:8001 or http://...; this machine only) serving PKG."),
        clients: int = typer.Option(8, "--clients", help="--triton: concurrent clients (scanners)."),
        requests: int = typer.Option(25, "--requests", help="--triton: pairs each client sends."),
    ):
        """Pairs/s and p50/p95/p99 at batch 1 for naive PyTorch, `none` and each package, with ratios."""
        if iters < 1 or warmup < 0:
            raise RatingEdgeError("--iters must be >= 1 and --warmup >= 0")
        if triton is not None:
            if len(packages or []) != 1:
                raise RatingEdgeError("--triton loads one package: rating-edge bench PKG --triton URL")
            _triton_load(packages[0], triton, clients, requests, json_out)
            return
        if soak is not None:
            if len(packages or []) != 1:
                raise RatingEdgeError("--soak runs one package: rating-edge bench PKG --soak MINUTES")
            if len(backend) != 1:
                raise RatingEdgeError("--soak runs one backend: give --backend once")
            _soak(packages[0], soak, backend[0], runtime_size, json_out)
            return
        if runtime is not None:  # checked before the slow imports below
            _runtime_size(runtime_size)
            if runtime_frames < 1:
                raise RatingEdgeError("--runtime-frames must be at least 1")
        from rating_edge.bench.core import host_reference_ms, machine_info, render_table, run_bench
        from rating_edge.export.inputs import random_pairs
        from rating_edge.model.checkpoint import read_manifest
        from rating_edge.package import load_package
        from rating_edge.threads import inference_threads

        if plot is not None:
            if reference is None:
                raise RatingEdgeError("--plot draws the engine rows: give --reference CKPT (and packages)")
            from rating_edge.plots.base import pyplot

            pyplot()  # a missing matplotlib stops here, not after minutes of timing
        if reference is None:
            if runtime is None:
                raise RatingEdgeError("give --reference CKPT (the naive baseline) and packages, and/or --runtime SOURCE")
            before = host_reference_ms()
            report = {"machine": machine_info(threads), "results": []}
            report["runtime_overhead"] = _runtime_overhead(runtime, runtime_frames, runtime_size)
            report["machine"]["host_reference_ms"] = {"before": before, "after": host_reference_ms()}
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
        threads = inference_threads()
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
        if plot is not None:
            from rating_edge.plots.bench import write_bench_plot

            console.print("wrote " + ", ".join(map(str, write_bench_plot(report, plot))))


def _runtime_overhead(source: str, frames: int, size: str, input_size: int = 224) -> dict:
    """The runtime's own per-frame cost next to the engine rows (its target is p95 <= 10 ms at 1080p)."""
    from rich.table import Table

    from rating_edge.runtime.overhead import measure_runtime_overhead

    w, h = _runtime_size(size)
    if frames < 1:
        raise RatingEdgeError("--runtime-frames must be at least 1")
    console.print(f"bench runtime: {frames} frames of {w}x{h} from {source} (engine excluded)")
    res = measure_runtime_overhead(source, frames=frames, size=(w, h), input_size=input_size)
    t = Table(title=f"runtime overhead per {w}x{h} frame, engine excluded ({res['frames']} frames, "
                    f"{res['pairs']} pairs, {res['cpu_ms_per_frame']:.1f} CPU ms/frame)")
    for col in ("stage", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "stage" else "right")

    def cells(pc):
        return ("-" if pc[k] is None else f"{pc[k]:.2f}" for k in ("p50", "p95", "p99"))

    for stage, pc in res["latency_ms"].items():
        # preprocess and score run on the inference thread, beside the frame path (as in `run`)
        t.add_row(f"{stage} (inference thread)" if stage in ("preprocess", "infer", "score") else
                  "total (frame path, as run)" if stage == "total" else stage, *cells(pc))
    t.add_row("total, all on one thread", *cells(res["serial"]["latency_ms"]["total"]))
    console.print(t)
    return res


def _runtime_size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise RatingEdgeError(f"--runtime-size {size!r}: expected WxH, e.g. 1920x1080") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise RatingEdgeError(f"--runtime-size {size!r}: width and height must be 16..8192 pixels")
    return w, h


def _soak(package, minutes: float, backend: str, size: str, json_out) -> None:
    """The soak benchmark: table of start/end resources and the JSON with every minute's sample."""
    import math

    from rich.table import Table

    from rating_edge.runtime.soak import soak

    if minutes is None or math.isnan(minutes) or not 0 < minutes <= 7 * 24 * 60:
        raise RatingEdgeError(f"--soak {minutes}: give the minutes to run (> 0)")
    from rating_edge.infer import resolve_backend

    if resolve_backend(backend) in ("triton",):
        raise RatingEdgeError("--soak runs the package in this process: --backend ort, trt, openvino or auto")
    w, h = _runtime_size(size)
    console.print(f"bench soak: {minutes:g} min of phantom://?fps=30&size={w}x{h} through the run pipeline with {package}")
    res = soak(str(package), minutes, backend=backend, size=f"{w}x{h}",
               progress=lambda s, t: console.print(f"  {t / 60:5.1f} min: RSS {s['rss_mb']} MB, fds {s['open_files']}, "
                                                   f"threads {s['threads']}, frames {s['frames_out']}, "
                                                   f"pairs {s['pairs_scored']}, queues {s['queues']}"))
    t = Table(title=f"soak {minutes:g} min, {res['fps_out']} fps out, RSS growth after warm-up {res['rss_growth_pct']} %")
    queues = list(res["end"]["queues"])
    for col in ("", "RSS MB", "fds", "threads", "frames", "pairs", "queues"):
        t.add_column(col)
    for k in ("before_warmup", "start", "end"):
        s = res[k]
        t.add_row(k, str(s["rss_mb"]), str(s["open_files"]), str(s["threads"]), str(s["frames_out"]),
                  str(s["pairs_scored"]), "/".join(str(s["queues"][q]) for q in queues))
    console.print(t)
    console.print(f"queues: {'/'.join(queues)}")
    errs = {k: v for k, v in res["run_report"]["errors_by_stage"].items() if v}
    console.print(f"errors by stage: {errs or 'none'}")
    _finish({"soak": res}, json_out)


def _finish(report: dict, json_out) -> None:
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


def _triton_load(package, url: str, clients: int, requests: int, json_out) -> None:
    """N scanner-like clients against a Triton server: throughput, latency and the batches it formed."""
    from rich.table import Table

    from rating_edge.bench.core import machine_info
    from rating_edge.bench.triton_load import run_load
    from rating_edge.package import load_package

    res = run_load(url, load_package(package), clients=clients, requests=requests)
    t = Table(title=f"Triton load: {clients} clients x {requests} pairs at {url}")
    for col in ("pairs", "errors", "pairs/s", "p50 ms", "p95 ms", "p99 ms", "mean batch", "batch sizes"):
        t.add_column(col, justify="right")
    t.add_row(str(res["pairs"]), str(res["errors"]), f"{res['pairs_per_s']:.1f}", f"{res['p50_ms']:.1f}",
              f"{res['p95_ms']:.1f}", f"{res['p99_ms']:.1f}", f"{res['mean_batch']:.2f}",
              ", ".join(f"{b}:{n}" for b, n in res["batch_sizes"].items()))
    console.print(t)
    _finish({"machine": machine_info(None), "results": [], "triton_load": res}, json_out)
