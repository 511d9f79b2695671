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
                                    "[:fp32|bf16|int8] or auto (the fastest gated CPU form here)."),
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
        """Score a scanner feed in real time and draw the result on it."""
        from rating_edge.runtime.app import RunConfig, run

        cfg = RunConfig(source=source, package=str(package) if package else None, backend=backend, variant=variant,
                        profile=str(profile) if profile else None, display=display, fullscreen=fullscreen,
                        out=str(out) if out else None, pipe=pipe, snapshots=str(snapshots) if snapshots else None,
                        snapshot_every=snapshot_every, log=str(log) if log else None,
                        report=str(report) if report else None, max_frames=max_frames, pace=pace,
                        every_pair=every_pair, max_pair_age_s=max_pair_age, min_similarity=min_similarity)
        r = run(cfg)
        tot = r["latency_ms"]["total"]
        typer.echo(f"frames in {r['frames_in']}, out {r['frames_out']}, dropped {r['frames_dropped']}; "
                   f"pairs scored {r['pairs_scored']}; modes {r['modes']}; total latency p50 {tot['p50']} ms, "
                   f"p95 {tot['p95']} ms")
        if report:
            typer.echo(f"report: {report}")

    @app.command("inspect")
    def inspect_cmd(
        frame: str = typer.Argument(..., help="Image file, or a video/DICOM/phantom source (see --frame)."),
        k: int = typer.Option(0, "--frame", help="Frame index in a video, cine DICOM or folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the stable JSON shape only."),
        png: Optional[Path] = typer.Option(None, "--png", help="Write the frame with what was found drawn on it."),
        profile: Optional[Path] = typer.Option(None, "--profile", help="Scanner profile (JSON/YAML)."),
    ):
        """What the runtime understands of one frame: layout, image areas, mode, Doppler box, frozen, signal."""
        import cv2

        from rating_edge.runtime.capture import read_one_frame
        from rating_edge.runtime.layout import LayoutDetector, Profile, draw_layout, load_profile

        img = read_one_frame(frame, k)
        det = LayoutDetector(load_profile(profile) if profile else Profile())
        if k > 0:  # `frozen` needs the frame before
            det.detect(read_one_frame(frame, k - 1))
        lo = det.detect(img)
        d = lo.to_json()
        if png:
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(png), draw_layout(img, lo))
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
