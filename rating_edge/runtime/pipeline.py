"""The real-time loop as declared stages: capture -> layout -> pairing -> scoring -> aggregation ->
overlay -> sinks, each a class with a typed input and output, composed in one place (`build_pipeline`).

`rating-edge run` and `rating-edge bench --runtime` / `--soak` run this same pipeline (the benchmark
with a fixed-output runner), so what is measured is what runs. The loop is driven by frames, not by
results: every captured frame is understood, drawn and written whatever the engine is doing, and
every stage fails open: an exception in one stage is counted under that stage's name, reported once,
and the frame goes on with what the stage could not add (docs/design/runtime.md). Only a package that cannot
serve here as it is (`EngineMismatch`, a tampered package) stops the run, at start, with the fix.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from rating_edge.runtime.aggregate import TemporalAggregator
from rating_edge.runtime.capture import CaptureThread, Frame, Source, as_bgr8
from rating_edge.runtime.layout import FrameLayout, LayoutDetector
from rating_edge.runtime.overlay import OverlayState, render
from rating_edge.runtime.pairing import Pair, Pairer
from rating_edge.runtime.stats import RunStats
from rating_edge.runtime.worker import InferenceWorker, Scorer


class ErrorReport:
    """Every failure is counted under its stage; each kind is printed (and logged) once, not per frame."""

    def __init__(self, stats: RunStats, prefix: str = "rating-edge run", quiet: bool = False):
        self.stats = stats
        self.prefix = prefix
        self.quiet = quiet
        self.log = None  # SessionLog once open: reported kinds become events
        self.seen = set()
        self.messages: list[tuple[str, str]] = []

    def __call__(self, stage: str, message: str, count: bool = True) -> None:
        if count:
            self.stats.count_error(stage)
        key = (stage, message.split(":")[0])
        if key in self.seen:
            return
        self.seen.add(key)
        self.messages.append((stage, message))
        if not self.quiet:
            print(f"{self.prefix}: {stage}: {message}", file=sys.stderr)
        if self.log is not None:
            try:
                self.log.event(stage, message)
            except Exception:  # noqa: BLE001 - a log that cannot take events is counted by the log stage
                pass


def describe(e: BaseException) -> str:
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---- what flows between the stages ---------------------------------------------------------------

@dataclass
class Captured:
    """A frame from the source, as BGR uint8; `image` is a black frame of the last size and `signal`
    False when the source lost its signal or stalled (NO SIGNAL is drawn on it)."""

    frame: Frame
    image: np.ndarray
    signal: bool
    stalled: bool = False


@dataclass
class Understood:
    captured: Captured
    layout: FrameLayout | None  # None: the frame was not understood (counted under `layout`)


@dataclass
class Paired:
    understood: Understood
    pair: Pair | None
    status: str


@dataclass
class Scored:
    paired: Paired
    results: list = field(default_factory=list)  # worker.Result, newest last (ok or carrying the error)


@dataclass
class Aggregated:
    scored: Scored
    results: list = field(default_factory=list)  # (Result, Aggregate or None when the result failed)


@dataclass
class Drawn:
    aggregated: Aggregated
    image: np.ndarray  # the overlaid frame (the captured frame itself: drawing is in place)


# ---- stages ----------------------------------------------------------------------------------------

class CaptureStage:
    """Source -> Captured. A live source that delivers no new frame for `stall_timeout` seconds gives
    NO SIGNAL ticks (the stream's read timeout then makes the capture thread reconnect)."""

    def __init__(self, source: Source, errors: ErrorReport, stats: RunStats, pace=None, max_frames=None,
                 stall_timeout: float = 2.0, poll_s: float = 0.1):
        self.source = source
        self.errors = errors
        self.stats = stats
        self.thread = CaptureThread(source, pace=pace, max_frames=max_frames)
        self.stall_timeout = stall_timeout
        self.poll_s = poll_s
        self.last_size = None
        self.last_t = None
        self._unreadable = 0
        self._read_errors = 0
        self.stalls = 0
        self._stalled = False

    def start(self):
        self.thread.start()
        self.last_t = time.perf_counter()

    def _note_unreadable(self):
        bad = getattr(self.source, "unreadable", None)
        while bad is not None and self._unreadable < len(bad):
            self.errors("frame", f"unreadable image in {self.source.name}: {bad[self._unreadable]} (skipped)")
            self._unreadable += 1
        raised = self.thread.read_errors
        while self._read_errors < len(raised):
            self.errors("capture", f"{self.source.name}: read failed, reconnecting: {describe(raised[self._read_errors])}")
            self._read_errors += 1

    def next(self) -> Captured | None:
        """The next frame, None when nothing is due yet; raises EOFError when the source has ended."""
        fr = self.thread.slot.get(timeout=self.poll_s)
        self._note_unreadable()
        now = time.perf_counter()
        if fr is None:
            if (self.source.can_stall and self.last_size is not None and self.stall_timeout
                    and now - self.last_t >= self.stall_timeout):
                if not self._stalled:
                    self.stalls += 1
                    self.errors("capture", f"{self.source.name}: no new frame for {self.stall_timeout:g} s "
                                "(NO SIGNAL, reconnecting)")
                self._stalled = True
                black = np.zeros((self.last_size[1], self.last_size[0], 3), np.uint8)
                return Captured(Frame(-1, 0.0, None, now), black, signal=False, stalled=True)
            return None
        self.stats.add("capture", fr.capture_ms)
        if fr.bgr is None:
            if self.last_size is None:
                return None
            return Captured(fr, np.zeros((self.last_size[1], self.last_size[0], 3), np.uint8), signal=False)
        try:
            img = as_bgr8(fr.bgr)
        except Exception as e:  # noqa: BLE001 - a frame that is not an image is skipped, counted
            self.errors("frame", describe(e))
            return None
        self.last_size = (img.shape[1], img.shape[0])
        self.last_t = now
        self._stalled = False
        return Captured(fr, img, signal=True)

    def close(self):
        self.thread.stop()
        self.thread.join(5)
        self._note_unreadable()
        if self.thread.error is not None:
            self.errors("capture", describe(self.thread.error))


class LayoutStage:
    """Captured -> Understood (image areas, modes, Doppler box, frozen)."""

    def __init__(self, detector: LayoutDetector, errors: ErrorReport):
        self.detector = detector
        self.errors = errors

    def __call__(self, c: Captured) -> Understood:
        if not c.signal:
            self.detector.reset()
            size = (c.image.shape[1], c.image.shape[0])
            return Understood(c, FrameLayout("single", [], signal=False, size=size))
        try:
            return Understood(c, self.detector.detect(c.image))
        except Exception as e:  # noqa: BLE001 - a frame that cannot be understood is shown as it is
            self.errors("layout", describe(e))
            return Understood(c, None)


class PairingStage:
    """Understood -> Paired: a Doppler image with the recent GS image of the same section (or why not)."""

    def __init__(self, pairer: Pairer, errors: ErrorReport):
        self.pairer = pairer
        self.errors = errors

    def __call__(self, u: Understood) -> Paired:
        c = u.captured
        if u.layout is None:
            return Paired(u, None, "frame not understood")
        try:
            pair, status = self.pairer.update(c.frame.index, c.frame.t, c.image, u.layout, c.frame.t_capture)
            # the overlay is drawn on the frame itself: what outlives this frame gets its own pixels first
            self.pairer.detach(c.image)
            if pair is not None:
                pair = pair.detached(c.image)
            return Paired(u, pair, status)
        except Exception as e:  # noqa: BLE001
            self.errors("pairing", describe(e))
            return Paired(u, None, "frame not understood")


class ScoringStage:
    """Paired -> Scored: the latest pair goes to the inference worker (latest pair wins: the feed never
    waits for the engine), or is scored inline with `inline` (offline analysis, the overhead bench)."""

    def __init__(self, scorer: Scorer | None, inline: bool = False):
        self.scorer = scorer
        self.worker = None if scorer is None or inline else InferenceWorker(scorer)

    def start(self):
        if self.worker is not None:
            self.worker.start()

    def __call__(self, p: Paired) -> Scored:
        out = Scored(p)
        if self.scorer is None:
            return out
        if p.pair is not None:
            if self.worker is None:
                out.results.append(self.scorer.score(p.pair))  # never raises: a failure is in the Result
            else:
                self.worker.submit(p.pair)
        if self.worker is not None:
            out.results += self.worker.take()
        return out

    def drain(self, p: Paired, timeout_s: float = 30.0) -> Scored:
        """The results still in flight at the end (the last submitted pair still counts)."""
        out = Scored(p)
        if self.worker is not None:
            end = time.perf_counter() + timeout_s
            while not self.worker.idle() and time.perf_counter() < end:
                time.sleep(0.01)
            out.results += self.worker.take()
        return out

    @property
    def dropped(self) -> int:
        return self.worker.dropped if self.worker is not None else 0

    def close(self):
        if self.worker is not None:
            self.worker.close()
        if self.scorer is not None:
            self.scorer.close()
            if self.worker is None or not self.worker.is_alive():  # never under a running inference
                deactivate = getattr(self.scorer.runner, "deactivate", None)
                if deactivate is not None:
                    deactivate()


class AggregationStage:
    """Scored -> Aggregated: pools the votes of the section's recent pairs (TemporalAggregator)."""

    def __init__(self, aggregator: TemporalAggregator, errors: ErrorReport, stats: RunStats):
        self.agg = aggregator
        self.errors = errors
        self.stats = stats

    def __call__(self, s: Scored) -> Aggregated:
        out = Aggregated(s)
        for res in s.results:
            if not res.ok:
                self.errors("inference", res.error)
                out.results.append((res, None))
                continue
            try:
                sc = res.scores
                a = self.agg.add(res.pair.section, res.pair.t, sc["sh_models"], sc["vs_models"], (sc["sh"], sc["vs"]))
            except Exception as e:  # noqa: BLE001 - a result that cannot be pooled is not shown
                self.errors("inference", describe(e))
                res.error = describe(e)
                out.results.append((res, None))
                continue
            res.aggregate = a
            self.stats.pairs_scored += 1
            for k, v in res.timings.items():
                self.stats.add(k, v)
            out.results.append((res, a))
        return out


class OverlayStage:
    """(Paired, Aggregated) -> Drawn: updates what the overlay shows and draws it on the frame. If drawing
    fails the frame goes out as captured (counted under `overlay`)."""

    def __init__(self, state: OverlayState, banner: str | None, pairer: Pairer, errors: ErrorReport,
                 stats: RunStats, window=None):
        self.state = state
        self.banner = banner
        self.pairer = pairer
        self.errors = errors
        self.stats = stats
        self.window = window
        self._fps_t = None

    def _update(self, a: Aggregated, status: str):
        st = self.state
        for res, agg in a.results:
            if agg is None:
                st.banner = "AI unavailable"
            else:
                st.banner = self.banner
                if not st.frozen_overlay:
                    st.result, st.aggregate = res, agg
        now = time.perf_counter()
        res = st.result
        if res is not None and not st.frozen_overlay and res.pair.section != self.pairer.section:
            st.result, st.aggregate = None, None  # the probe moved: old scores are not this section's
            res = None
        st.status = status
        st.result_age_s = None if res is None else max(0.0, now - res.t_done)
        st.latency_ms = None if res is None else (res.t_done - res.pair.t_capture) * 1e3
        if self._fps_t is not None:
            dt = now - self._fps_t
            st.fps = 0.9 * st.fps + 0.1 * (1.0 / dt) if st.fps and dt > 0 else (1.0 / dt if dt > 0 else 0)
        self._fps_t = now
        if self.window is not None and self.window.roi is not None:
            st.roi_override = self.window.roi

    def __call__(self, p: Paired, a: Aggregated) -> Drawn:
        img = p.understood.captured.image
        try:
            self._update(a, p.status)
            return Drawn(a, render(img, p.understood.layout, self.state, in_place=True))
        except Exception as e:  # noqa: BLE001 - the scanner picture goes out even if drawing fails
            self.errors("overlay", describe(e))
            return Drawn(a, img)


class LogStage:
    """Scored pairs into the session log. A log that cannot take a row (locked by another process, full
    disk, a file that is not a log) is reported once and counted; its rows wait (up to `max_pending`,
    the oldest dropped and counted) and are retried with the next pair, so the feed never waits on it."""

    def __init__(self, open_log, errors: ErrorReport, stats: RunStats, max_pending: int = 2000,
                 retry_open_s: float = 1.0, banner: str | None = None, report_extra: dict | None = None):
        self._open_log = open_log
        self.errors = errors
        self.stats = stats
        self.banner = banner  # the engine never started: the session's AI-unavailable period opens at once
        self.report_extra = report_extra or {}
        self.frame = None  # index of the frame being written (snapshots record it)
        self.log = None
        self.pending: deque = deque()
        self.max_pending = max_pending
        self.retry_open_s = retry_open_s
        self._next_open = 0.0
        self.lost = 0
        self.try_open()

    def try_open(self, now: bool = False) -> bool:
        if self.log is not None:
            return True
        if not now and time.perf_counter() < self._next_open:
            return False
        try:
            self.log = self._open_log()
        except Exception as e:  # noqa: BLE001 - sqlite3/OS errors: the feed goes on, rows wait
            self.errors("log", f"cannot open the session log: {describe(e)}; retrying")
            self._next_open = time.perf_counter() + self.retry_open_s
            return False
        self.errors.log = self.log
        if self.log.migrated:
            self.errors("log", f"session log {self.log.path} was written by an older version: added columns "
                        f"{', '.join(self.log.migrated)}", count=False)
        for stage, msg in self.errors.messages:  # what went wrong before the log was open
            try:
                self.log.event(stage, msg)
            except Exception:  # noqa: BLE001
                break
        if self.banner:
            self._quietly(self.log.ai, False, self.banner.removeprefix("AI unavailable: "))
        return True

    def _quietly(self, fn, *args) -> None:
        """Timeline rows (modes, AI availability, snapshots) for the session report: a log that cannot
        take one is already reported by the pair rows; these are not retried."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self.errors("log", f"cannot write the session log: {describe(e)}")

    def see_frame(self, d: "Drawn") -> None:
        """The frame's mode, for the timeline (the log keeps only the changes)."""
        u = d.aggregated.scored.paired.understood
        self.frame = u.captured.frame.index
        if self.log is not None or self.try_open():
            lo = u.layout
            self._quietly(self.log.mode, self.frame, lo.mode if lo is not None else "gs")

    def snapshot(self, path, result, heat: bool) -> None:
        if self.log is not None or self.try_open():
            self._quietly(self.log.snapshot, path, self.frame, result, heat)

    def __call__(self, a: Aggregated) -> None:
        for res, agg in a.results:
            if self.log is not None:
                self._quietly(self.log.ai, agg is not None, "" if agg is not None else (res.error or ""))
            if agg is None:
                continue
            lat = dict(res.timings)
            lat["pair_total"] = (res.t_done - res.pair.t_capture) * 1e3
            self.pending.append((res, agg, lat))
            if len(self.pending) > self.max_pending:
                self.pending.popleft()
                self.lost += 1
                self.errors("log", "session log unavailable: oldest waiting rows dropped")
        self.flush()

    def flush(self, now: bool = False) -> None:
        if not self.pending or not self.try_open(now):
            return
        while self.pending:
            res, agg, lat = self.pending[0]
            try:
                self.log.log_pair(res.pair, res.scores, agg, lat, res.sh_prob, res.vs_prob)
            except Exception as e:  # noqa: BLE001 - locked, full, read-only: keep the row, try again later
                self.errors("log", f"cannot write the session log: {describe(e)}; rows kept and retried")
                return
            self.pending.popleft()

    def close(self) -> None:
        self.flush(now=True)
        if self.pending:
            self.lost += len(self.pending)
            self.errors("log", f"{len(self.pending)} scored pairs could not be written to the session log")
            self.pending.clear()
        if self.log is not None:
            self._quietly(self.log.finish, self.stats.report(dict(self.report_extra)))
            try:
                self.log.close()
            except Exception as e:  # noqa: BLE001
                self.errors("log", f"closing the session log: {describe(e)}")
            self.log = None


class SinksStage:
    """Drawn -> the window, video file, pipe and snapshots, then the scored pairs to the session log.
    A sink that fails (disk full, pipe closed) is reported once, counted and skipped from then on."""

    def __init__(self, sinks: list, log: LogStage | None, errors: ErrorReport):
        self.sinks = sinks
        self.log = log
        self.errors = errors
        self.broken = set()

    def __call__(self, d: Drawn) -> None:
        if self.log is not None:
            self.log.see_frame(d)
        for s in self.sinks:
            if s.name in self.broken:
                continue
            try:
                s.write(d.image)
            except Exception as e:  # noqa: BLE001 - a failed sink must not stop the others
                self.broken.add(s.name)
                self.errors("sinks", f"{s.name}: {describe(e)}")
        if self.log is not None:
            self.log(d.aggregated)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 - e.g. a video that cannot be played back
                self.broken.add(s.name)
                self.errors("sinks", f"{s.name}: {describe(e)}")
        if self.log is not None:
            self.log.close()


# ---- the pipeline ----------------------------------------------------------------------------------

class Pipeline:
    """The stages in order, with per-stage timings; `run` loops until the source ends, `max_frames`, a
    quit key or `request_stop` (the signal handlers call it)."""

    def __init__(self, capture: CaptureStage, layout: LayoutStage, pairing: PairingStage, scoring: ScoringStage,
                 aggregation: AggregationStage, overlay: OverlayStage, sinks: SinksStage, stats: RunStats,
                 errors: ErrorReport, model_id: str = "", on_key=None):
        self.capture, self.layout, self.pairing, self.scoring = capture, layout, pairing, scoring
        self.aggregation, self.overlay, self.sinks = aggregation, overlay, sinks
        self.stats, self.errors, self.model_id = stats, errors, model_id
        self.on_key = on_key  # window key handling: returns True to stop
        self.stop_reason: str | None = None
        self._last_paired = None
        self.started = False

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def start(self) -> "Pipeline":
        self.scoring.start()
        self.capture.start()
        self.started = True
        return self

    def step(self, c: Captured) -> Drawn:
        st = self.stats
        t0 = time.perf_counter()
        u = self.layout(c)
        t1 = time.perf_counter()
        p = self.pairing(u)
        t2 = time.perf_counter()
        s = self.scoring(p)
        a = self.aggregation(s)
        t3 = time.perf_counter()
        d = self.overlay(p, a)
        t4 = time.perf_counter()
        self.sinks(d)
        t5 = time.perf_counter()
        self._last_paired = p
        lo = u.layout
        st.count_mode("no_signal" if not c.signal else (lo.mode if lo is not None else "gs"))
        st.add("layout", (t1 - t0) * 1e3)
        st.add("pairing", (t2 - t1) * 1e3)
        st.add("aggregation", (t3 - t2) * 1e3)
        st.add("render", (t4 - t3) * 1e3)
        st.add("sinks", (t5 - t4) * 1e3)
        st.add("total", (t5 - c.frame.t_capture) * 1e3)
        st.add("own", c.frame.capture_ms + (t5 - t0) * 1e3)  # the runtime's own work, waits excluded
        st.frames_out += 1
        return d

    def run(self, on_frame=None) -> None:
        if not self.started:
            self.start()
        while self.stop_reason is None:
            try:
                c = self.capture.next()
            except EOFError:
                break
            if c is None:
                continue
            d = self.step(c)
            if on_frame is not None:
                on_frame(c, d, self)
            if self.on_key is not None and self.on_key():
                break
        if self._last_paired is not None and self.scoring.worker is not None and self.stop_reason is None:
            # the last submitted pair still counts (not after a stop signal: stop promptly)
            a = self.aggregation(self.scoring.drain(self._last_paired))
            self.sinks.log(a) if self.sinks.log is not None else None

    def close(self) -> dict:
        """Stop every stage (each failure counted, none skipping the others); the counters for the report."""
        th = self.capture.thread

        def counters():  # before the sinks close: the session log's end-of-run stats include them
            self.stats.frames_in = th.frames_in
            self.stats.frames_dropped = th.dropped
            self.stats.pairs_dropped = self.scoring.dropped

        for stage, close in (("capture", self.capture.close), ("inference", self.scoring.close),
                             ("report", counters), ("sinks", self.sinks.close)):
            try:
                close()
            except Exception as e:  # noqa: BLE001 - each part is closed whatever the others do
                self.errors(stage, f"closing: {describe(e)}")
        extra = {"reconnects": th.reconnects, "stalls": self.capture.stalls,
                 "broken_sinks": sorted(self.sinks.broken),
                 "error_kinds": [f"{stage}: {msg}" for stage, msg in self.errors.messages]}
        if self.sinks.log is not None:
            extra["log_rows_lost"] = self.sinks.log.lost
        if self.stop_reason:
            extra["stopped_by"] = self.stop_reason
        return extra
