"""Values are checked at the edge of `run`, `inspect` and `bench --runtime/--soak`: one line, exit 2, before
anything runs (a negative frame count, a NaN threshold, an unknown backend, a folder for a file)."""
import json

import cv2
import numpy as np
import pytest

from rating_edge.cli import main
from rating_edge.runtime.pairing import MIN_SIMILARITY

SRC = "phantom://?seed=1&fps=30&size=320x180"


def one_line_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and match in err, err


@pytest.mark.parametrize("args,match", [
    (["--max-frames", "-5"], "--max-frames"),
    (["--max-frames", "0"], "--max-frames"),
    (["--max-pair-age", "-1"], "--max-pair-age"),
    (["--max-pair-age", "nan"], "--max-pair-age"),
    (["--min-similarity", "5"], "--min-similarity"),
    (["--min-similarity", "nan"], "--min-similarity"),
    (["--snapshot-every", "-1"], "--snapshot-every"),
    (["--backend", "cuda"], "--backend"),
    (["--stall-timeout", "0"], "--stall-timeout"),
    (["--stall-timeout", "inf"], "--stall-timeout"),
    (["--out", "video.gif"], "--out"),
    (["--backend", "triton"], "--url"),  # a server backend without its server
    (["--backend", "triton", "--url", "ftp://x"], "--url"),
    (["--backend", "triton", "--url", "grpc://127.0.0.1:1", "--infer-timeout", "nan"], "--infer-timeout"),
    (["--backend", "ort:int8"], "--backend"),  # only openvino takes a precision
])
def test_run_rejects_bad_values(capsys, args, match):
    one_line_error(capsys, ["run", "--source", SRC, *args], match)


@pytest.mark.parametrize("opt", ["--log", "--report", "--out"])
def test_run_rejects_a_folder_for_a_file(capsys, tmp_path, opt):
    one_line_error(capsys, ["run", "--source", SRC, opt, str(tmp_path)], "is a folder")


def test_run_help_shows_the_codes_similarity_default(capsys):
    with pytest.raises(SystemExit):
        from rating_edge.cli import app
        app(["run", "--help"], standalone_mode=True, prog_name="rating-edge")
    assert f"{MIN_SIMILARITY}" in capsys.readouterr().out.replace("\n", "")


def test_inspect_rejects_a_negative_frame(capsys):
    one_line_error(capsys, ["inspect", SRC, "--frame", "-3"], "--frame")


@pytest.mark.parametrize("prof", [{"frame_size": [640, 360], "areas": [[-5, 0, 10, 10]]},
                                  {"frame_size": [0, 360]}, {"frame_size": [64, 36], "areas": [[0, 0, 640, 360]]}])
@pytest.mark.parametrize("cmd", ["run", "inspect"])
def test_bad_profile_is_one_line_at_start(capsys, tmp_path, prof, cmd):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(prof))
    argv = ["run", "--source", SRC, "--max-frames", "2"] if cmd == "run" else ["inspect", SRC]
    one_line_error(capsys, argv + ["--profile", str(p)], "profile")


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (8, 8), (4, 2000), (2000, 4)])
def test_inspect_tiny_frames(capsys, tmp_path, size):
    f = tmp_path / "tiny.png"
    cv2.imwrite(str(f), np.random.default_rng(0).integers(0, 255, (*size, 3), np.uint8))
    assert main(["inspect", str(f), "--json", "--png", str(tmp_path / "d.png")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["areas"] == [] and d["layout"] == "single"


@pytest.mark.parametrize("args,match", [
    (["--runtime", SRC, "--runtime-frames", "0"], "--runtime-frames"),
    (["--runtime", SRC, "--runtime-size", "0x0"], "--runtime-size"),
    (["--runtime", SRC, "--runtime-size", "big"], "--runtime-size"),
    (["--soak", "-1", "pkg"], "--soak"),
    (["--soak", "nan", "pkg"], "--soak"),
    (["--soak", "1"], "--soak"),
])
def test_bench_runtime_values(capsys, args, match):
    one_line_error(capsys, ["bench", *args], match)
