"""`rating-edge run`: the run configuration, the one place the pipeline's stages are composed
(`build_pipeline`, used by `run`, `bench --runtime` and `bench --soak`), and a clean stop on signals.

The stages themselves are in pipeline.py. Fail-open is decided by the type of an error, never its
text: an engine built elsewhere (`EngineMismatch`) or a tampered package stops the run at start with
the fix; any other engine failure (`EngineUnavailable` included) runs the feed with "AI unavailable".
SIGTERM (`timeout`, `kill`, `docker stop`, systemd), SIGINT and SIGHUP end the loop: the video file
is finalised, the log closed and the report written, as at the end of a recording.
"""
from __future__ import annotations

import math
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.errors import EngineMismatch
from rating_edge.runtime.aggregate import TemporalAggregator
from rating_edge.runtime.capture import Source, open_source
from rating_edge.runtime.layout import LayoutDetector, Profile, load_profile
from rating_edge.runtime.memory import keep_freed_memory
from rating_edge.runtime.overlay import OverlayState
from rating_edge.runtime.pairing import MIN_SIMILARITY, Pairer
from rating_edge.runtime.pipeline import (
    AggregationStage,
    CaptureStage,
    ErrorReport,
    LayoutStage,
    LogStage,
    OverlayStage,
    PairingStage,
    Pipeline,
    ScoringStage,
    SinksStage,
    describe,
)
from rating_edge.runtime.session_log import SessionLog
from rating_edge.runtime.sinks import PipeSink, SnapshotSink, VideoFileSink, WindowSink
from rating_edge.runtime.stats import RunStats, write_report
from rating_edge.runtime.worker import Scorer

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))


@dataclass
class RunConfig:
    source: str
    package: str | None = None
    backend: str = "ort"
    variant: str | None = None
    profile: str | None = None
    display: bool = False
    fullscreen: bool = False
    out: str | None = None
    pipe: str | None = None
    snapshots: str | None = None
    snapshot_every: int = 0
    log: str | None = None
    report: str | None = None
    max_frames: int | None = None
    pace: bool | None = None  # None: live sources paced, recordings as fast as processed
    every_pair: bool = False  # score every pair inline (offline analysis) instead of latest-pair-wins
    max_pair_age_s: float = 3.0
    min_similarity: float = MIN_SIMILARITY
    stall_timeout_s: float = 2.0  # a live source without a new frame this long: NO SIGNAL and reconnect
    url: str | None = None  # inference server (--backend triton)
    infer_timeout_s: float = 5.0  # a server slower than this counts as unavailable for that pair
    quiet: bool = True

    def validate(self) -> "RunConfig":
        """One-line errors for values that would otherwise run wrongly or fail late (after a whole run)."""
        def finite(name, v, lo, hi=math.inf, lo_open=False):
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise RatingEdgeError(f"{name} {v!r}: expected a number") from None
            if math.isnan(x) or x > hi or x < lo or (lo_open and x == lo):
                rng = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != math.inf else "")
                raise RatingEdgeError(f"{name} {v!r}: must be a number {rng}")

        from rating_edge.infer import backend_names, resolve_backend

        try:
            self.backend = resolve_backend(self.backend)
        except RatingEdgeError:
            raise RatingEdgeError(f"--backend {self.backend!r}: choose one of {', '.join(backend_names())}") from None
        if backend_options(self):  # a server backend: its --url is checked there, its timeout here
            finite("--infer-timeout", self.infer_timeout_s, 0.0, 3600.0, lo_open=True)
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or int(self.max_frames) < 1):
            raise RatingEdgeError(f"--max-frames {self.max_frames}: must be at least 1")
        if int(self.snapshot_every) < 0:
            raise RatingEdgeError(f"--snapshot-every {self.snapshot_every}: must be 0 (off) or a positive N")
        finite("--max-pair-age", self.max_pair_age_s, 0.0, 3600.0, lo_open=True)
        finite("--min-similarity", self.min_similarity, -1.0, 1.0)
        finite("--stall-timeout", self.stall_timeout_s, 0.0, 3600.0, lo_open=True)
        for opt, v in (("--log", self.log), ("--report", self.report), ("--out", self.out)):
            if v and Path(v).is_dir():
                raise RatingEdgeError(f"{opt} {v} is a folder; give a file path inside it")
        if self.out and Path(self.out).suffix.lower() not in (".mp4", ".avi", ".mkv"):
            raise RatingEdgeError(f"--out {self.out}: use a .mp4, .avi or .mkv file name")
        if self.snapshots and Path(self.snapshots).is_file():
            raise RatingEdgeError(f"--snapshots {self.snapshots} is a file; give a folder")
        return self


def backend_options(cfg: RunConfig) -> dict:
    """The backend options every command derives from --url/--infer-timeout (rating_edge.infer), and the
    live loop's own: it waits for an inference server that is not up yet."""
    from rating_edge.infer import backend_options as options

    opts = options(cfg.backend, cfg.url, cfg.infer_timeout_s)
    return {**opts, "wait_for_server": True} if opts else {}


def engine_label(asked: str, runner) -> str:
    """What the session log records as the backend: what ran, not only what was asked ("auto" names the
    form it chose, with its graphs and threads), so a logged grade can be traced to the exact engine."""
    if runner is None:
        return asked
    try:
        d = runner.describe()
    except Exception:  # noqa: BLE001 - a runner that cannot describe itself still runs
        return asked
    parts = [str(d.get("backend", asked)), str(d.get("precision", "") or "")]
    if d.get("variant"):
        parts.append(f"({d['variant']} graphs")
        n = d.get("threads")
        parts[-1] += (f", {n} thread{'s' if n != 1 else ''})" if n else ")")
    ran = " ".join(p for p in parts if p)
    return ran if asked in (d.get("backend"), "") else f"{asked} -> {ran}"


def open_engine(cfg: RunConfig, runner, errors: ErrorReport):
    """(scorer or None, model id, package hash, banner). A tampered package or an engine that must be
    rebuilt here raises (EngineMismatch: only the user can fix it); any other failure to start the
    engine fails open: the feed runs with an "AI unavailable" banner and the error is counted."""
    if runner is None:
        if not cfg.package:
            return None, "", "", "AI unavailable: no model package (--package)"
        from rating_edge.infer import make_runner
        from rating_edge.package import load_package

        pkg = load_package(cfg.package, verify=True)  # refuses tampered packages before anything loads
        try:
            runner = make_runner(pkg, backend=cfg.backend, variant=cfg.variant, **backend_options(cfg))
            runner.activate()
        except EngineMismatch:
            raise
        except Exception as e:  # noqa: BLE001 - EngineUnavailable and anything else: the feed goes on
            errors("engine", describe(e))
            return None, "", pkg.model_hash, "AI unavailable: engine failed to start"
    else:
        try:
            runner.activate()
        except EngineMismatch:
            raise
        except Exception as e:  # noqa: BLE001
            errors("engine", describe(e))
            return None, "", "", "AI unavailable: engine failed to start"
    pkg = getattr(runner, "package", None)
    mh = pkg.model_hash if pkg is not None else ""
    return Scorer(runner), mh, mh, None


DEFAULT_SNAPSHOTS = "rating-edge-snapshots"


def handle_key(k: int, state: OverlayState, window, snap: SnapshotSink | None) -> tuple[bool, SnapshotSink | None]:
    """One key press in the window (the `?` help lists them): (quit?, snapshot sink). Without
    --snapshots the first `s` creates ./rating-edge-snapshots, so a snapshot is never silently lost."""
    if k in (ord("q"), 27):
        return True, snap
    if k == ord("h"):
        state.show_heat = not state.show_heat
    elif k == ord("?"):
        state.show_help = not state.show_help
    elif k == ord("f"):
        state.frozen_overlay = not state.frozen_overlay
    elif k == ord("r"):
        window.roi, state.roi_override = None, None
    elif k == ord("s"):
        snap = snap or SnapshotSink(DEFAULT_SNAPSHOTS)
        snap.request()
    return False, snap


def build_pipeline(cfg: RunConfig, runner=None, window=None, source: Source | None = None,
                   stats: RunStats | None = None, quiet: bool = False) -> Pipeline:
    """The one composition of the stages. `runner` injects an engine (tests, the benchmarks' fixed
    outputs), `window` a window sink, `source` an already built Source. Everything opened here is
    closed again if a later part cannot be opened."""
    stats = stats or RunStats()
    errors = ErrorReport(stats, quiet=quiet)
    profile = load_profile(cfg.profile) if cfg.profile else Profile()
    opened = []
    try:
        scorer, model_id, pkg_hash, banner = open_engine(cfg, runner, errors)
        if scorer is not None:
            opened.append(scorer.runner.deactivate)
        src = source or open_source(cfg.source)
        src.stall_timeout_s = cfg.stall_timeout_s
        src.open()
        opened.append(src.close)
        doppler_params = scorer.params.doppler if scorer is not None else None
        # with a second core, the periodic area search leaves the frame path (see LayoutDetector)
        detector = LayoutDetector(profile, doppler_params, fractions=False, background=(os.cpu_count() or 1) > 1)
        pairer = Pairer(cfg.max_pair_age_s, cfg.min_similarity, profile.roi, doppler_params)
        log = None
        if cfg.log:
            label = engine_label(cfg.backend, scorer.runner if scorer is not None else None)
            log = LogStage(lambda: SessionLog(cfg.log, source=str(cfg.source), package=str(cfg.package or ""),
                                              package_hash=pkg_hash, backend=label, busy_ms=20,
                                              variant=cfg.variant),
                           errors, stats, banner=banner, report_extra={"source": str(cfg.source), "model": model_id})
            if banner:
                errors("engine", banner, count=False)
        sinks = []
        try:
            if cfg.out:
                sinks.append(VideoFileSink(cfg.out, src.fps))
            if cfg.pipe:
                sinks.append(PipeSink(cfg.pipe, src.fps))
            snap = SnapshotSink(cfg.snapshots, cfg.snapshot_every) if cfg.snapshots else None
        except OSError as e:
            raise RatingEdgeError(f"cannot create an output: {e}") from None

        def on_snapshot(path):
            """What the saved frame showed goes to the log beside the file (for the session report)."""
            if log is not None:
                res = state.result
                heat = bool(state.show_heat and res is not None
                            and (res.heat_gs is not None or res.heat_doppler is not None))
                log.snapshot(path, res, heat)

        if snap:
            snap.on_save = on_snapshot
            sinks.append(snap)
        if window is None and cfg.display:
            window = WindowSink(fullscreen=cfg.fullscreen)
        if window is not None:
            sinks.append(window)
        state = OverlayState(model_id=model_id, banner=banner)
        sink_stage = SinksStage(sinks, log, errors)
        on_key = None
        if window is not None:
            holder = {"snap": snap}

            def on_key():
                had = holder["snap"]
                stop, holder["snap"] = handle_key(window.key(), state, window, had)
                if holder["snap"] is not had:  # the first `s` without --snapshots: written from the next frame on
                    holder["snap"].on_save = on_snapshot
                    sink_stage.sinks.insert(0, holder["snap"])
                return stop

        return Pipeline(
            CaptureStage(src, errors, stats, pace=cfg.pace, max_frames=cfg.max_frames, stall_timeout=cfg.stall_timeout_s),
            LayoutStage(detector, errors), PairingStage(pairer, errors), ScoringStage(scorer, inline=cfg.every_pair),
            AggregationStage(TemporalAggregator(), errors, stats),
            OverlayStage(state, banner, pairer, errors, stats, window), sink_stage, stats, errors, model_id, on_key)
    except BaseException:
        for close in reversed(opened):
            try:
                close()
            except Exception:  # noqa: BLE001
                pass
        raise


class _StopOnSignal:
    """SIGTERM/SIGINT/SIGHUP ask the pipeline to stop after the current frame (handlers only exist in
    the main thread; elsewhere, e.g. a test's worker thread, the default handling stays)."""

    def __init__(self):
        self.pipeline = None
        self.reason = None

    def __call__(self, signum, _frame):
        self.reason = self.reason or signal.Signals(signum).name
        if self.pipeline is not None:
            self.pipeline.request_stop(self.reason)


@contextmanager
def stop_signals():
    h = _StopOnSignal()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            old[s] = signal.signal(s, h)
    try:
        yield h
    finally:
        for s, o in old.items():
            signal.signal(s, o)


def run(cfg: RunConfig, runner=None, on_frame=None, window=None, source: Source | None = None) -> dict:
    """Run a session; returns the report dict (also written to cfg.report). `runner` injects an engine,
    `window` a window sink (anything with write, key, roi, close: tests drive keys and mouse with it);
    `on_frame(frame, layout, overlay_state, image)` sees each drawn frame."""
    cfg.validate()
    keep_freed_memory()
    stats = RunStats()
    with stop_signals() as stop:
        pipe = build_pipeline(cfg, runner, window, source, stats, quiet=False)
        stop.pipeline = pipe
        if stop.reason:
            pipe.request_stop(stop.reason)
        hook = None
        if on_frame is not None:
            def hook(c, d, p):
                on_frame(c.frame, d.aggregated.scored.paired.understood.layout, p.overlay.state, d.image)
        try:
            pipe.run(on_frame=hook)
        finally:
            extra = pipe.close()
            report = stats.report({"source": str(cfg.source), "model": pipe.model_id, **extra})
            if cfg.report:
                try:
                    write_report(cfg.report, report)
                except OSError as e:
                    raise RatingEdgeError(f"cannot write the report {cfg.report}: {e}") from None
    return report
