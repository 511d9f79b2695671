"""The run loop: capture -> layout/mode -> pairing -> (worker) scoring -> overlay -> sinks, plus log and report.

The loop is driven by frames, not by results: every captured frame is understood, drawn and written
whatever the engine is doing, so the feed never stalls (DESIGN.md §5). Results arrive from the worker
and are shown with their age until the next one, for the current section only.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.runtime.aggregate import TemporalAggregator
from rating_edge.runtime.capture import CaptureThread, open_source
from rating_edge.runtime.layout import FrameLayout, LayoutDetector, Profile, load_profile
from rating_edge.runtime.memory import keep_freed_memory
from rating_edge.runtime.overlay import OverlayState, render
from rating_edge.runtime.pairing import MIN_SIMILARITY, Pairer
from rating_edge.runtime.session_log import SessionLog
from rating_edge.runtime.sinks import PipeSink, SnapshotSink, VideoFileSink, WindowSink
from rating_edge.runtime.stats import RunStats
from rating_edge.runtime.worker import InferenceWorker, Scorer


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
    quiet: bool = True


class ErrorOnce:
    """Report each kind of failure once (stderr + session log), never per frame."""

    def __init__(self, log: SessionLog | None):
        self.log = log
        self.seen = set()

    def __call__(self, kind: str, message: str):
        key = (kind, message.split(":")[0])
        if key in self.seen:
            return
        self.seen.add(key)
        print(f"rating-edge run: {kind}: {message}", file=sys.stderr)
        if self.log is not None:
            self.log.event(kind, message)


def _open_runner(cfg: RunConfig, runner, report_error):
    """(scorer, model id, package hash, banner). A tampered package raises; an engine that cannot start
    fails open: the feed runs with an "AI unavailable" banner."""
    if runner is None:
        if not cfg.package:
            return None, "", "", "AI unavailable: no model package (--package)"
        from rating_edge.package import load_package
        from rating_edge.runtime.engines import make_runner

        pkg = load_package(cfg.package, verify=True)  # refuses tampered packages before anything loads
        try:
            runner = make_runner(pkg, backend=cfg.backend, variant=cfg.variant)
            runner.activate()
        except RatingEdgeError as e:
            if "TensorRT" in str(e) or "rebuild" in str(e):
                raise
            report_error("engine", str(e))
            return None, "", pkg.model_hash, "AI unavailable: engine failed to start"
    else:
        runner.activate()
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


def run(cfg: RunConfig, runner=None, on_frame=None, window=None) -> dict:
    """Run a session; returns the report dict (also written to cfg.report). `runner` injects an engine,
    `window` a window sink (anything with write, key, roi, close: tests drive keys and mouse with it)."""
    keep_freed_memory()
    profile = load_profile(cfg.profile) if cfg.profile else Profile()
    log = None
    stats = RunStats()
    src = open_source(cfg.source).open()
    errors = ErrorOnce(None)
    sinks = []
    worker = None
    cap = None
    scorer = None
    try:
        scorer, model_id, pkg_hash, banner = _open_runner(cfg, runner, errors)
        if cfg.log:
            log = SessionLog(cfg.log, source=str(cfg.source), package=str(cfg.package or ""), package_hash=pkg_hash,
                             backend=cfg.backend, variant=cfg.variant)
            errors.log = log
            if banner:
                log.event("engine", banner)
                log.ai(False, banner.removeprefix("AI unavailable: "))
        doppler_params = scorer.params.doppler if scorer is not None else None
        detector = LayoutDetector(profile, doppler_params, fractions=False)
        pairer = Pairer(cfg.max_pair_age_s, cfg.min_similarity, profile.roi, doppler_params)
        agg = TemporalAggregator()
        if cfg.out:
            sinks.append(VideoFileSink(cfg.out, src.fps))
        if cfg.pipe:
            sinks.append(PipeSink(cfg.pipe, src.fps))
        snap = SnapshotSink(cfg.snapshots, cfg.snapshot_every) if cfg.snapshots else None
        frame_no = [None]

        def on_snapshot(path):
            """What the saved frame showed goes to the log beside the file (for the session report)."""
            if log is not None:
                res = state.result
                heat = bool(state.show_heat and res is not None
                            and (res.heat_gs is not None or res.heat_doppler is not None))
                log.snapshot(path, frame_no[0], res, heat)

        if snap:
            snap.on_save = on_snapshot
            sinks.append(snap)
        if window is None and cfg.display:
            window = WindowSink(fullscreen=cfg.fullscreen)
        if window is not None:
            sinks.append(window)
        if scorer is not None and not cfg.every_pair:
            worker = InferenceWorker(scorer)
            worker.start()
        state = OverlayState(model_id=model_id, banner=banner)
        cap = CaptureThread(src, pace=cfg.pace, max_frames=cfg.max_frames)
        cap.start()
        last_size = None
        buf = None
        fps_t = None
        broken_sinks = set()

        def handle(res):
            if not res.ok:
                stats.errors += 1
                errors("inference", res.error)
                state.banner = "AI unavailable"
                if log is not None:
                    log.ai(False, res.error)
                return
            state.banner = banner
            if log is not None:
                log.ai(True)
            stats.pairs_scored += 1
            for k, v in res.timings.items():
                stats.add(k, v)
            a = agg.add(res.pair.section, res.pair.t, res.scores["sh_models"], res.scores["vs_models"],
                        (res.scores["sh"], res.scores["vs"]))
            res.aggregate = a
            if log is not None:
                lat = dict(res.timings)
                lat["pair_total"] = (res.t_done - res.pair.t_capture) * 1e3
                log.log_pair(res.pair, res.scores, a, lat, res.sh_prob, res.vs_prob)
            if not state.frozen_overlay:
                state.result, state.aggregate = res, a

        while True:
            try:
                fr = cap.slot.get(timeout=0.5)
            except EOFError:
                break
            if fr is None:
                continue
            if fr.bgr is None:
                if last_size is None:
                    continue
                img = np.zeros((last_size[1], last_size[0], 3), np.uint8)
                lo = FrameLayout("single", [], signal=False, size=last_size)
                pair, status = None, "NO SIGNAL: reconnecting"
                detector.reset()
            else:
                img = fr.bgr
                last_size = (img.shape[1], img.shape[0])
                try:
                    lo = detector.detect(img)
                    pair, status = pairer.update(fr.index, fr.t, img, lo, fr.t_capture)
                except Exception as e:  # noqa: BLE001 - a bad frame must not stop the feed
                    errors("frame", f"{type(e).__name__}: {e}")
                    lo, pair, status = None, None, "frame not understood"
            stats.count_mode(lo.mode if lo is not None else "gs")
            frame_no[0] = fr.index
            if log is not None:
                log.mode(fr.index, lo.mode if lo is not None else "gs")
            stats.add("capture", fr.capture_ms)
            # the overlay is drawn on `img` itself: what outlives this frame gets its own pixels first
            pairer.detach(img)
            if pair is not None and scorer is not None:
                if worker is None:
                    handle(scorer.score(pair))
                else:
                    worker.submit(pair.detached(img))
            if worker is not None:
                for res in worker.take():
                    handle(res)
            now = time.perf_counter()
            res = state.result
            if res is not None and not state.frozen_overlay and res.pair.section != pairer.section:
                state.result, state.aggregate = None, None  # the probe moved: old scores are not this section's
                res = None
            state.status = status
            state.result_age_s = None if res is None else max(0.0, now - res.t_done)
            state.latency_ms = None if res is None else (res.t_done - res.pair.t_capture) * 1e3
            if fps_t is not None:
                dt = now - fps_t
                state.fps = 0.9 * state.fps + 0.1 * (1.0 / dt) if state.fps and dt > 0 else (1.0 / dt if dt > 0 else 0)
            fps_t = now
            t_r = time.perf_counter()
            if window is not None and window.roi is not None:
                state.roi_override = window.roi
            buf = render(img, lo, state, in_place=True)
            stats.add("render", (time.perf_counter() - t_r) * 1e3)
            for s in sinks:
                if s.name in broken_sinks:
                    continue
                try:
                    s.write(buf)
                except Exception as e:  # noqa: BLE001 - a failed sink must not stop the others
                    broken_sinks.add(s.name)
                    errors("sink", f"{s.name}: {e}")
            stats.frames_out += 1
            stats.add("total", (time.perf_counter() - fr.t_capture) * 1e3)
            if on_frame is not None:
                on_frame(fr, lo, state, buf)
            if window is not None:
                had = snap
                stop, snap = handle_key(window.key(), state, window, snap)
                if snap is not had:  # the first `s` without --snapshots: written from the next frame on
                    snap.on_save = on_snapshot
                    sinks.insert(0, snap)
                if stop:
                    break
        if cap.error is not None:
            errors("capture", f"{type(cap.error).__name__}: {cap.error}")
        if worker is not None:  # the last submitted pair still counts
            end = time.perf_counter() + 30
            while not worker.idle() and time.perf_counter() < end:
                time.sleep(0.01)
            for res in worker.take():
                handle(res)
    finally:
        if cap is not None:
            cap.stop()
            cap.join(5)
        if worker is not None:
            stats.pairs_dropped = worker.dropped
            worker.close()
        if scorer is not None:
            scorer.close()
        src.close()
        for s in sinks:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        stats.frames_in = cap.frames_in if cap is not None else 0
        stats.frames_dropped = cap.dropped if cap is not None else 0
        if log is not None:
            try:
                log.finish(stats.report({"source": str(cfg.source), "model": model_id}))
            finally:
                log.close()
    report = stats.report({"source": str(cfg.source), "model": model_id, "reconnects": cap.reconnects})
    if cfg.report:
        Path(cfg.report).parent.mkdir(parents=True, exist_ok=True)
        stats.write(cfg.report, {"source": str(cfg.source), "model": model_id, "reconnects": cap.reconnects})
    return report
