"""CLI: `rating-edge run`, `rating-edge inspect`, `rating-edge profile detect` (no torch on these paths)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rating_edge.runtime.pairing import MIN_SIMILARITY


def register(app: typer.Typer) -> None:
    profile_app = typer.Typer(help="Scanner profiles: where the image areas, UI and ROI are on the screen.",
                              no_args_is_help=True)
    app.add_typer(profile_app, name="profile")

    @app.command("run")
    def run_cmd(
        package: Optional[Path] = typer.Option(None, "--package", help="Model package folder (hashes are checked)."),
        source: str = typer.Option(..., "--source", help="Video file, image folder, DICOM, /dev/videoN or index, "
                                   "udp/rtsp/http URL, GStreamer pipeline, or phantom://?seed=1&fps=30&..."),
        profile: Optional[Path] = typer.Option(None, "--profile", help="Scanner profile (JSON/YAML)."),
        backend: str = typer.Option("ort", "--backend", help="ort (ONNX Runtime), trt (TensorRT), openvino"
                                    "[:fp32|bf16|int8], auto (the fastest gated CPU form here) or triton (an "
                                    "inference server: --url)."),
        url: Optional[str] = typer.Option(None, "--url", help="--backend triton: grpc://HOST:8001 or http://HOST:8000."),
        infer_timeout: float = typer.Option(5.0, "--infer-timeout", help="--backend triton: seconds a pair may take "
                                            "before the server counts as unavailable for it."),
        stall_timeout: float = typer.Option(2.0, "--stall-timeout", help="Seconds without a new frame from a live "
                                            "source before NO SIGNAL is shown and the source is reopened."),
        variant: Optional[str] = typer.Option(None, "--variant", help="Package graph variant, e.g. int8-u8s8."),
        display: bool = typer.Option(False, "--display", help="Show a window (needs an OpenCV with GUI)."),
        fullscreen: bool = typer.Option(False, "--fullscreen", help="Window in full screen."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the overlaid video (mp4/avi/mkv)."),
        pipe: Optional[str] = typer.Option(None, "--pipe", help="Pipe raw BGR frames to a command; {w} {h} {fps} "
                                           "are filled in (e.g. an ffmpeg or gst-launch command)."),
        snapshots: Optional[Path] = typer.Option(None, "--snapshots", help="Folder for PNG snapshots (key s)."),
        snapshot_every: int = typer.Option(0, "--snapshot-every", help="Also save every N-th overlaid frame."),
        log: Optional[Path] = typer.Option(None, "--log", help="Session log (SQLite, WAL)."),
        report: Optional[Path] = typer.Option(None, "--report", help="Report JSON (frames, modes, latency)."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N captured frames."),
        pace: Optional[bool] = typer.Option(None, "--pace/--no-pace", help="Play recordings at their frame "
                                            "rate, dropping frames like a live feed (default: live sources only)."),
        every_pair: bool = typer.Option(False, "--every-pair", help="Score every pair in the capture loop "
                                        "(offline analysis) instead of the latest-pair-wins worker."),
        max_pair_age: float = typer.Option(3.0, "--max-pair-age", help="Oldest GS image (s) a Doppler image "
                                           "may be paired with."),
        min_similarity: float = typer.Option(MIN_SIMILARITY, "--min-similarity", help="Gray-structure correlation a GS "
                                             "and a Doppler image need to count as one section."),
    ):
        """Score a scanner feed in real time and draw the result on it. SIGTERM, SIGINT and SIGHUP stop it
        cleanly (video finalised, log closed, report written)."""
        from rating_edge.runtime.app import RunConfig, run

        cfg = RunConfig(source=source, package=str(package) if package else None, backend=backend, variant=variant,
                        profile=str(profile) if profile else None, display=display, fullscreen=fullscreen,
                        out=str(out) if out else None, pipe=pipe, snapshots=str(snapshots) if snapshots else None,
                        snapshot_every=snapshot_every, log=str(log) if log else None,
                        report=str(report) if report else None, max_frames=max_frames, pace=pace,
                        every_pair=every_pair, max_pair_age_s=max_pair_age, min_similarity=min_similarity,
                        stall_timeout_s=stall_timeout, url=url, infer_timeout_s=infer_timeout).validate()
        r = run(cfg)
        tot = r["latency_ms"]["total"]
        errs = {k: v for k, v in r["errors_by_stage"].items() if v}
        typer.echo(f"frames in {r['frames_in']}, out {r['frames_out']}, dropped {r['frames_dropped']}; "
                   f"pairs scored {r['pairs_scored']}; modes {r['modes']}; total latency p50 {tot['p50']} ms, "
                   f"p95 {tot['p95']} ms; errors {errs or 0}" + (f"; stopped by {r['stopped_by']}" if r.get("stopped_by") else ""))
        if report:
            typer.echo(f"report: {report}")
        lost = [s for s in r["broken_sinks"] if s.startswith(("video", "pipe"))]
        if lost or r.get("log_rows_lost"):
            # the feed went on, but an output the user asked for is incomplete: not a silent exit 0
            what = ", ".join(lost + ([f"{r['log_rows_lost']} session log rows"] if r.get("log_rows_lost") else []))
            typer.echo(f"error: output incomplete: {what} (see the messages above)", err=True)
            raise typer.Exit(1)

    @app.command("inspect")
    def inspect_cmd(
        frame: Optional[str] = typer.Argument(None, help="Image file, or a video/DICOM/phantom source (see --frame)."),
        k: int = typer.Option(0, "--frame", help="Frame index in a video, cine DICOM or folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the stable JSON shape only."),
        png: Optional[Path] = typer.Option(None, "--png", help="Write the frame with what was found drawn on it."),
        profile: Optional[Path] = typer.Option(None, "--profile", help="Scanner profile (JSON/YAML)."),
        eval_truth: Optional[Path] = typer.Option(None, "--eval", help="Judge every frame named in this truth "
                                                  "JSON (screens in its folder): per frame right/wrong and why, "
                                                  "and N/M frames right."),
    ):
        """What the runtime understands of one frame: layout, image areas, mode, Doppler box, frozen, signal."""
        import cv2

        from rating_edge.errors import RatingEdgeError
        from rating_edge.runtime.capture import as_bgr8, read_one_frame
        from rating_edge.runtime.layout import (
            LayoutDetector,
            Profile,
            draw_layout,
            load_profile,
        )

        if eval_truth is not None:
            from rating_edge.runtime.screen_eval import evaluate, format_report

            res = evaluate(eval_truth, load_profile(profile) if profile else None)
            typer.echo(json.dumps(res) if as_json else "\n".join(format_report(res)))
            return
        if frame is None:
            raise RatingEdgeError("inspect needs a FRAME (image, video, DICOM or phantom source) or --eval TRUTH.json")
        if k < 0:
            raise RatingEdgeError(f"--frame {k}: frame indices start at 0")
        det = LayoutDetector(load_profile(profile) if profile else Profile())
        img = as_bgr8(read_one_frame(frame, k))
        try:
            if k > 0:  # `frozen` needs the frame before
                det.detect(as_bgr8(read_one_frame(frame, k - 1)))
            lo = det.detect(img)
        except RatingEdgeError:
            raise
        except Exception as e:  # noqa: BLE001 - one line, as for every other bad input
            raise RatingEdgeError(f"{frame} frame {k}: the screen could not be understood "
                                  f"({type(e).__name__}: {e})") from None
        d = lo.to_json()
        if png:
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(png), draw_layout(img, lo, det.profile.roi))
        if as_json:
            typer.echo(json.dumps(d))
            return
        typer.echo(f"{frame} frame {k}: {img.shape[1]}x{img.shape[0]}, layout {d['layout']}, "
                   f"signal {d['signal']}, frozen {d['frozen']}")
        for i, a in enumerate(d["areas"]):
            typer.echo(f"  area {i}: box {a['box']} mode {a['mode']} doppler_box {a['doppler_box']} "
                       f"doppler_fraction {a['doppler_fraction']:.4f}")
        if png:
            typer.echo(f"wrote {png}")

    @profile_app.command("detect")
    def profile_detect_cmd(
        source: str = typer.Option(..., "--source", help="Any run source (file, folder, DICOM, device, URL, phantom)."),
        out: Path = typer.Option(..., "--out", help="Profile file to write (.json, .yaml or .yml)."),
        frames: int = typer.Option(30, "--frames", help="How many frames to look at."),
        name: str = typer.Option("detected", "--name", help="Profile name (scanner / preset)."),
    ):
        """Propose a scanner profile (image areas, layout) from a few frames of a source."""
        from rating_edge.errors import RatingEdgeError
        from rating_edge.runtime.capture import open_source, read_frames
        from rating_edge.runtime.layout import propose_profile

        if frames < 1:
            raise RatingEdgeError("--frames must be at least 1")
        got = read_frames(open_source(source), frames)
        prof = propose_profile(got, name=name)
        prof.save(out)
        typer.echo(f"wrote {out}: layout {prof.layout}, areas {[list(a) for a in prof.areas]} "
                   f"(frame {prof.frame_size[0]}x{prof.frame_size[1]}, {len(got)} frames)")
        typer.echo(f"next: rating-edge run --package PKG --source {source} --profile {out}")
