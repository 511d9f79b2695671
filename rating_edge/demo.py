"""`make demo`: the whole pipeline on a fresh CPU machine, from phantom data to scores on a scanner video.

Stages (each one a function; each prints its name, and a missing or failing stage stops the demo with
a message naming it):

    data      phantom training dataset                 rating-edge phantom dataset
    train     tiny 60-network ensemble                 rating-edge train --preset tiny
    export    fused `stack` model package              rating-edge export --fuse stack
    calib     calibration set (held-apart phantom)     rating-edge calib collect --phantom N
    quantize  INT8 with its agreement gate             rating-edge quantize --gate 0.98 --plots
    evaluate  paper metrics + figures on held-out data rating-edge evaluate --plots
    video     phantom scanner-screen video + truth     rating-edge phantom video
    run       runtime on the video                     rating-edge run --out --log --report --snapshot-every
    report    static session page from the log         rating-edge report --html
    bench     naive 60-network baseline vs packages    rating-edge bench --json --plot
    summary   accuracy vs phantom truth, speed         (here)

The stages call the CLI through subprocesses, so the demo exercises exactly what users run and does
not break when a stage's internals change. Everything before `run` is cached under `.demo_cache/<key>`,
where the key is the toolkit version plus the demo settings: a second `make demo` only runs, benches
and summarises. Outputs go to `demo_out/`; the pictures to `demo_out/plots/` and the session page to
`demo_out/report/index.html`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rating_edge import __version__

CACHE = Path(".demo_cache")
OUT = Path("demo_out")


@dataclass(frozen=True)
class DemoSettings:
    """Everything that changes a cached artefact. Sized for a 2-core CPU in the 15-minute budget."""

    seed: int = 0
    train_pairs: int = 320
    doppler: str = "mixed"
    epochs: int | None = None          # None: the tiny preset's own recipe
    head_epochs: int | None = None
    calib_pairs: int = 320
    gate: float = 0.98
    video_seconds: float = 60.0
    video_fps: int = 10
    video_size: str = "1280x720"
    video_layout: str = "single"
    bench_iters: int = 20
    eval_pairs: int = 120              # held-out phantom pairs for `evaluate --plots`
    eval_bootstrap: int = 200
    snapshot_every: int = 150          # frames between the run's snapshots (shown in the session page)

    def key(self) -> str:
        """Cache key: toolkit version + settings + the source of the stages that make cached products, so
        neither a changed setting nor a `git pull` that changes the phantom, training or export ever
        reuses stale results."""
        blob = json.dumps({"version": __version__, "settings": asdict(self), "code": code_fingerprint()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Modules whose code shapes the cached products (data, checkpoint, packages, calibration, video).
CACHED_CODE = ("phantom", "train", "model", "export", "calibration", "preprocess.py", "spec.py", "package.py",
               "dataset.py", "heatmap.py")


def code_fingerprint() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in CACHED_CODE:
        p = root / name
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else []
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


class StageError(RuntimeError):
    """A stage is missing from this build or failed; the message names the stage."""


@dataclass
class StageResult:
    name: str
    seconds: float
    cached: bool
    note: str = ""


@dataclass
class Demo:
    settings: DemoSettings
    root: Path = Path(".")
    python: str = sys.executable
    results: list = field(default_factory=list)
    _commands: set | None = None
    key: str = ""

    def __post_init__(self):
        # Fixed once: code edited while the demo runs must not scatter one run over several caches.
        self.key = self.key or self.settings.key()

    @property
    def cache(self) -> Path:
        return self.root / CACHE / self.key

    @property
    def out(self) -> Path:
        return self.root / OUT

    # ---------------------------------------------------------------- plumbing
    def commands(self) -> set:
        if self._commands is None:
            self._commands = available_commands()
        return self._commands

    def need(self, stage: str, command: str, issue: str) -> None:
        if command not in self.commands():
            raise StageError(f"stage '{stage}' is not available in this build: `rating-edge {command}` is missing "
                             f"({issue}). Available: {', '.join(sorted(self.commands())) or 'none'}")

    def cli(self, stage: str, *args: str) -> None:
        cmd = [self.python, "-m", "rating_edge", *map(str, args)]
        print(f"    $ rating-edge {' '.join(map(str, args))}", flush=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        r = subprocess.run(cmd, cwd=self.root, env=env)
        if r.returncode != 0:
            raise StageError(f"stage '{stage}' failed: `rating-edge {' '.join(map(str, args))}` exited with "
                             f"status {r.returncode} (its output is above)")

    def cached_stage(self, stage: str, product: Path, build) -> Path:
        """Run `build(tmp_path)` unless `product` exists; publish it by rename so a killed run never leaves
        a half-made product that looks finished."""
        t0 = time.perf_counter()
        if product.exists():
            print(f"[{stage}] cached: {product}", flush=True)
            self.results.append(StageResult(stage, time.perf_counter() - t0, True))
            return product
        print(f"[{stage}] running", flush=True)
        from rating_edge.publish import publish

        with publish(product, StageError) as tmp:
            build(tmp)
            if not tmp.exists():
                raise StageError(f"stage '{stage}' finished but wrote nothing at {tmp}")
        self.results.append(StageResult(stage, time.perf_counter() - t0, False))
        return product

    def timed_stage(self, stage: str, fn):
        t0 = time.perf_counter()
        print(f"[{stage}] running", flush=True)
        note = fn() or ""
        self.results.append(StageResult(stage, time.perf_counter() - t0, False, note))

    # ---------------------------------------------------------------- stages
    def data(self) -> Path:
        s = self.settings
        self.need("data", "phantom dataset", "phantom issue 3")
        return self.cached_stage("data", self.cache / "data", lambda tmp: self.cli(
            "data", "phantom", "dataset", tmp, "--n", s.train_pairs, "--seed", s.seed, "--doppler", s.doppler))

    def train(self, data: Path) -> Path:
        s = self.settings
        self.need("train", "train", "training issue 3")
        extra = []
        if s.epochs is not None:
            extra += ["--epochs", s.epochs]
        if s.head_epochs is not None:
            extra += ["--head-epochs", s.head_epochs]
        # Training is resumable inside its folder, so it runs in place (not .tmp) and an interrupted
        # demo continues where it stopped; the finished ensemble is marked by its manifest.
        ckpt = self.cache / "ckpt"
        t0 = time.perf_counter()
        if (ckpt / "ensemble.json").is_file():
            print(f"[train] cached: {ckpt}", flush=True)
            self.results.append(StageResult("train", time.perf_counter() - t0, True))
            return ckpt
        print("[train] running (resumable)", flush=True)
        self.cli("train", "train", data, ckpt, "--preset", "tiny", "--seed", s.seed, *extra)
        if not (ckpt / "ensemble.json").is_file():
            raise StageError(f"stage 'train' finished without writing {ckpt / 'ensemble.json'}")
        self.results.append(StageResult("train", time.perf_counter() - t0, False))
        return ckpt

    def export(self, ckpt: Path) -> Path:
        self.need("export", "export", "exporter issue 4")
        return self.cached_stage("export", self.cache / "pkg-stack", lambda tmp: self.cli(
            "export", "export", ckpt, tmp, "--fuse", "stack"))

    def calib(self, pkg: Path) -> Path:
        s = self.settings
        self.need("calib", "calib collect", "calibration issue 5")
        # A phantom seed apart from the training data's, so the gate's held-out pairs are unseen; the
        # package's own preprocessing parameters, so calibration sees what the engine is fed.
        return self.cached_stage("calib", self.cache / "calib", lambda tmp: self.cli(
            "calib", "calib", "collect", tmp, "--phantom", s.calib_pairs, "--seed", s.seed + 1000,
            "--package", pkg))

    def quantize(self, pkg: Path, calib: Path) -> tuple[Path, str]:
        """INT8 package, or the FP32 one with a loud note when the gate refuses INT8 (the demo goes on,
        the summary says which precision ran)."""
        self.need("quantize", "quantize", "INT8 issue 5")
        product = self.cache / "pkg-int8"
        refused = self.cache / "int8-refused.txt"
        if refused.is_file() and not product.exists():
            note = refused.read_text().strip()
            print(f"[quantize] cached: {note}", flush=True)
            self.results.append(StageResult("quantize", 0.0, True, note))
            return pkg, note
        plots = self.cache / "int8-plots"  # FP32-vs-INT8 pictures, drawn also when the gate refuses
        try:
            return self.cached_stage("quantize", product, lambda tmp: self.cli(
                "quantize", "quantize", pkg, calib, tmp, "--gate", self.settings.gate, "--plots", plots)), "int8"
        except StageError as e:
            note = f"INT8 refused or failed ({e}); the runtime runs the FP32 stack package"
            print(f"[quantize] WARNING: {note}", flush=True)
            refused.write_text(note + "\n")
            self.results.append(StageResult("quantize", 0.0, False, note))
            return pkg, note

    def evaluate(self, pkg: Path) -> Path:
        """The paper's metrics and figures on phantom pairs the ensemble never saw (a seed of their own)."""
        s = self.settings
        self.need("evaluate", "evaluate", "metrics issue 13")
        data = self.cached_stage("eval-data", self.cache / "eval-data", lambda tmp: self.cli(
            "eval-data", "phantom", "dataset", tmp, "--n", s.eval_pairs, "--seed", s.seed + 3000,
            "--doppler", s.doppler))
        plots = self.out / "plots" / "evaluate"
        js = self.out / "evaluate.json"
        self.timed_stage("evaluate", lambda: self.cli(
            "evaluate", "evaluate", pkg, data, "--bootstrap", s.eval_bootstrap, "--json", js, "--plots", plots))
        return js

    def video(self) -> Path:
        s = self.settings
        self.need("video", "phantom video", "phantom issue 3")
        vid = self.cache / "video" / "scanner.mp4"

        def build(tmp: Path):
            tmp.mkdir(parents=True)
            self.cli("video", "phantom", "video", tmp / "scanner.mp4", "--seconds", s.video_seconds, "--fps",
                     s.video_fps, "--size", s.video_size, "--layout", s.video_layout, "--seed", s.seed + 2000)

        self.cached_stage("video", vid.parent, build)
        if not vid.is_file():
            raise StageError(f"stage 'video' did not write {vid}")
        return vid

    def run(self, pkg: Path, video: Path) -> dict:
        self.need("run", "run", "runtime issue 6")
        out = self.out
        for name in ("overlay.mp4", "session.db", "session.db-wal", "session.db-shm", "report.json"):
            if (out / name).exists():
                (out / name).unlink()
        shutil.rmtree(out / "snapshots", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        form = cpu_form(pkg)
        self.engine = form
        print(f"[run] engine: {form['backend']} {form['precision']} ({form['variant']} graphs): {form['why']}",
              flush=True)
        # --pace: the recording plays at its frame rate and frames are dropped like a live feed, so the
        # latency and accuracy are those a user at the scanner would see.
        self.timed_stage("run", lambda: self.cli(
            # `auto` makes the same choice inside `run`, with the thread count measured for it
            "run", "run", "--package", pkg, "--backend", "auto", "--source", video,
            "--pace", "--out", out / "overlay.mp4", "--log", out / "session.db", "--report", out / "report.json",
            "--snapshots", out / "snapshots", "--snapshot-every", self.settings.snapshot_every))
        return {"overlay": out / "overlay.mp4", "log": out / "session.db", "report": out / "report.json"}

    def report(self, log: Path) -> Path:
        """The session page (timeline, grades per section, snapshots, latency) from the run's log."""
        self.need("report", "report", "pictures issue 20")
        self.timed_stage("report", lambda: self.cli("report", "report", log, "--html", self.out / "report"))
        return self.out / "report" / "index.html"

    def int8_plots(self) -> Path | None:
        """The quantize stage's FP32-vs-INT8 pictures (made once, cached) copied beside the others."""
        src, dst = self.cache / "int8-plots", self.out / "plots" / "int8"
        shutil.rmtree(dst, ignore_errors=True)
        if not src.is_dir():
            return None
        shutil.copytree(src, dst)
        return dst

    def export_none(self, ckpt: Path) -> Path:
        """The `none` package (60 separate graphs) bench compares against; cached so a second demo
        does not export it again."""
        return self.cached_stage("export-none", self.cache / "pkg-none", lambda tmp: self.cli(
            "export-none", "export", ckpt, tmp, "--fuse", "none"))

    def bench(self, ckpt: Path, pkgs: list) -> Path | None:
        self.need("bench", "bench", "benchmark issue 4/8")
        none = self.export_none(ckpt)
        js = self.out / "bench.json"
        if js.exists():
            js.unlink()
        uniq = list(dict.fromkeys(map(str, pkgs)))
        from rating_edge.infer.openvino import openvino_available

        backends = ["--backend", "ort"] + (["--backend", "openvino"] if openvino_available() else [])
        self.timed_stage("bench", lambda: self.cli(
            "bench", "bench", *uniq, "--reference", ckpt, "--none", none, "--iters", self.settings.bench_iters,
            *backends, "--json", js, "--plot", self.out / "plots" / "bench.png"))
        return js


def cpu_form(pkg: Path) -> dict:
    """The fastest gated CPU form of the package on this CPU ({"backend", "precision", "variant", "why"}):
    OpenVINO INT8/BF16 on VNNI/AMX x86 when installed and gated, ONNX Runtime U8S8 otherwise (issue 15)."""
    from rating_edge.infer.cpu_forms import choose_cpu_form
    from rating_edge.package import load_package

    return choose_cpu_form(load_package(pkg))


def available_commands() -> set:
    """'train', 'phantom video', ... as registered in the Typer app of this build."""
    from rating_edge.cli import app

    names = set()
    for c in app.registered_commands:
        names.add(c.name or c.callback.__name__.replace("_", "-"))
    for g in app.registered_groups:
        sub = g.typer_instance
        gname = g.name or sub.info.name
        for c in sub.registered_commands:
            names.add(f"{gname} {c.name or c.callback.__name__.replace('_', '-')}")
    return names


# -------------------------------------------------------------------- summary (pure)
def read_sidecar(path) -> list[dict]:
    recs = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            recs.append(json.loads(line))
    return recs


def find_sidecar(video: Path) -> Path:
    for cand in (video.with_suffix(".jsonl"), video.with_name(video.name + ".jsonl"),
                 video.with_name(video.stem + ".truth.jsonl"), video.with_name(video.stem + "_truth.jsonl")):
        if cand.is_file():
            return cand
    found = sorted(video.parent.glob("*.jsonl"))
    if found:
        return found[0]
    raise StageError(f"stage 'summary': no truth sidecar (.jsonl) next to {video}")


def _grade(rec: dict, name: str):
    for d in (rec, rec.get("grades") or {}, rec.get("truth") or {}):
        if isinstance(d, dict) and d.get(name) is not None:
            return int(d[name])
    return None


def truth_combined(rec: dict):
    """The combined grade of a sidecar record (given, or max(SH, VS)); None when the frame has none."""
    c = _grade(rec, "combined")
    if c is not None:
        return c
    sh, vs = _grade(rec, "sh"), _grade(rec, "vs")
    return None if sh is None or vs is None else max(sh, vs)


def truth_by_frame(sidecar: list[dict]) -> dict:
    out = {}
    for i, rec in enumerate(sidecar):
        f = rec.get("frame", rec.get("index", i))
        out[int(f)] = rec
    return out


def read_log_pairs(path) -> list[dict]:
    from rating_edge.runtime.session_log import read_pairs

    return read_pairs(path)


def read_log_events(path) -> list[dict]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY id")]
    except sqlite3.DatabaseError:
        return []
    finally:
        db.close()


def summarize(report: dict, sidecar: list[dict], pairs: list[dict], bench: dict | None = None) -> dict:
    """Accuracy against the phantom truth of each scored pair's Doppler frame: of the score the overlay
    displays (the pair's combined grade, its main line) and of the temporally aggregated line under it
    (the pair's own score where the runtime did not aggregate), plus the speed figures."""
    truth = truth_by_frame(sidecar)
    n = hit = hit_agg = no_truth = 0
    confusion = [[0] * 4 for _ in range(4)]
    for p in pairs:
        rec = truth.get(int(p["frame_doppler"]))
        t = None if rec is None else truth_combined(rec)
        if t is None:
            no_truth += 1
            continue
        shown = int(p["combined"])
        agg = p.get("agg_combined")
        agg = shown if agg is None else int(agg)
        n += 1
        hit += int(shown == t)
        hit_agg += int(agg == t)
        if 0 <= t < 4 and 0 <= shown < 4:
            confusion[t][shown] += 1
    lat = report.get("latency_ms", {})
    res = {
        "pairs_scored": len(pairs),
        "pairs_with_truth": n,
        "pairs_without_truth": no_truth,
        "accuracy_displayed": hit / n if n else None,
        "accuracy_aggregated": hit_agg / n if n else None,
        "confusion_truth_x_shown": confusion,
        "frames_in": report.get("frames_in"), "frames_out": report.get("frames_out"),
        "frames_dropped": report.get("frames_dropped"),
        "latency_infer_ms": {k: lat.get("infer", {}).get(k) for k in ("p50", "p99")},
        "latency_total_ms": {k: lat.get("total", {}).get(k) for k in ("p50", "p99")},
        "bench": None,
    }
    if bench:
        rows = bench.get("results", [])
        naive = next((r for r in rows if r.get("name") == "naive"), None)
        others = [r for r in rows if r.get("name") != "naive"]
        int8 = [r for r in others if "int8" in str(r.get("name", "")).lower()]
        best = max(int8 or others, key=lambda r: r.get("pairs_per_s") or 0, default=None)
        res["bench"] = {"rows": rows, "naive": naive, "package": best}
    return res


def _f(v, fmt=".1f"):
    return "n/a" if v is None else format(v, fmt)


def format_summary(s: dict, precision_note: str = "") -> str:
    lines = ["", "=" * 72, "rating-edge demo summary (tiny phantom-trained ensemble, this CPU)", "=" * 72]
    acc = s["accuracy_displayed"]
    lines.append(f"combined-score accuracy (displayed) vs phantom truth : {_f(acc and 100 * acc)} % "
                 f"of {s['pairs_with_truth']} scored pairs"
                 + (f" ({s['pairs_without_truth']} without truth)" if s["pairs_without_truth"] else ""))
    acc_a = s["accuracy_aggregated"]
    lines.append(f"combined-score accuracy (aggregated line, N pairs)    : {_f(acc_a and 100 * acc_a)} %")
    lines.append(f"runtime latency ms  infer p50/p99 {_f(s['latency_infer_ms']['p50'])}/{_f(s['latency_infer_ms']['p99'])}"
                 f"   total p50/p99 {_f(s['latency_total_ms']['p50'])}/{_f(s['latency_total_ms']['p99'])}")
    lines.append(f"frames in/out/dropped {s['frames_in']}/{s['frames_out']}/{s['frames_dropped']}")
    b = s.get("bench")
    if b:
        lines.append("")
        lines.append(f"{'bench (batch 1)':<28}{'pairs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'x naive':>10}")
        for r in b["rows"]:
            lines.append(f"{str(r.get('name')):<28}{_f(r.get('pairs_per_s')):>10}{_f(r.get('p50_ms'), '.2f'):>10}"
                         f"{_f(r.get('p99_ms'), '.2f'):>10}{_f(r.get('ratio_to_naive'), '.2f'):>10}")
        if b["package"]:
            lines.append(f"speed ratio to the naive 60-network baseline ({b['package'].get('name')}): "
                         f"{_f(b['package'].get('ratio_to_naive'), '.2f')}x")
    if precision_note:
        lines.append(f"precision: {precision_note}")
    return "\n".join(lines)


# -------------------------------------------------------------------- main
def run_demo(settings: DemoSettings, root: Path = Path("."), skip_bench: bool = False) -> dict:
    t0 = time.perf_counter()
    d = Demo(settings, Path(root))
    print(f"rating-edge {__version__} demo; cache {d.cache} (key = version + settings); outputs {d.out}/", flush=True)
    data = d.data()
    ckpt = d.train(data)
    pkg = d.export(ckpt)
    calib = d.calib(pkg)
    run_pkg, precision = d.quantize(pkg, calib)
    d.int8_plots()
    d.evaluate(pkg)
    video = d.video()
    outs = d.run(run_pkg, video)
    d.report(outs["log"])
    bench = None
    if not skip_bench:
        js = d.bench(ckpt, [pkg, run_pkg])
        bench = json.loads(js.read_text()) if js and js.is_file() else None
    print("[summary] running", flush=True)
    if not outs["report"].is_file():
        raise StageError(f"stage 'summary': the runtime wrote no report at {outs['report']}")
    pairs = read_log_pairs(outs["log"]) if outs["log"].is_file() else []
    if not pairs:
        events = read_log_events(outs["log"]) if outs["log"].is_file() else []
        why = "; ".join(f"{e['kind']}: {e['message']}" for e in events[:3]) or "no events logged"
        raise StageError(f"stage 'run' scored no pairs on {video} ({why}); see {outs['report']}")
    summary = summarize(json.loads(outs["report"].read_text()), read_sidecar(find_sidecar(video)), pairs, bench)
    summary["precision"] = precision
    summary["engine"] = getattr(d, "engine", None)
    summary["stages"] = [asdict(r) for r in d.results]
    summary["total_s"] = time.perf_counter() - t0
    summary["settings"] = asdict(settings)
    summary["cache_key"] = d.key
    (d.out / "summary.json").write_text(json.dumps(summary, indent=2))
    eng = summary["engine"]
    text = format_summary(summary, precision + (f"; ran {eng['backend']} {eng['precision']} ({eng['variant']}) "
                                                f"on this {eng['cpu_class']} CPU" if eng else ""))
    stage_line = ", ".join(f"{r.name} {r.seconds:.0f}s{' (cached)' if r.cached else ''}" for r in d.results)
    text += f"\nstages: {stage_line}\ntotal {summary['total_s']:.0f} s; outputs in {d.out}/ " \
            "(overlay.mp4, session.db, report.json, bench.json, evaluate.json, summary.json, plots/, " \
            "report/index.html)"
    (d.out / "summary.txt").write_text(text + "\n")
    print(text, flush=True)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rating_edge.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true", help="ignore and replace this setting's cache")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark stage")
    ap.add_argument("--train-pairs", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--video-seconds", type=float, default=None)
    a = ap.parse_args(argv)
    kw = {k: v for k, v in {"train_pairs": a.train_pairs, "epochs": a.epochs,
                            "video_seconds": a.video_seconds}.items() if v is not None}
    settings = DemoSettings(**kw)
    if a.fresh:
        shutil.rmtree(CACHE / settings.key(), ignore_errors=True)
    try:
        run_demo(settings)
    except StageError as e:
        print(f"\ndemo stopped: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ndemo interrupted; finished stages stay cached in .demo_cache/", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
