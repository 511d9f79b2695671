"""Phantom dataset writer and the `rating-edge phantom` commands."""
import json

import cv2
import pytest
from typer.testing import CliRunner

from rating_edge.cli import app, main
from rating_edge.dataset import load_arrays, read_labels
from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.dataset import write_dataset
from rating_edge.preprocess import PreprocessParams, doppler_mask


def test_dataset_is_readable_and_consistent(tmp_path):
    out = write_dataset(tmp_path / "d", n=14, seed=3, doppler="mixed", patients=4)
    recs = read_labels(out)
    assert len(recs) == 14
    assert {r.sh for r in recs} == {0, 1, 2, 3} and {r.vs for r in recs} == {0, 1, 2, 3}
    assert len({r.patient_id for r in recs}) == 4
    assert {r.doppler_kind for r in recs} == {"cdus", "pdus"}
    for r in recs:
        assert r.combined == max(r.sh, r.vs) and not (r.sh == 0 and r.vs > 0)
        assert r.gs_roi == r.doppler_roi and r.gs_roi is not None
        d = cv2.imread(str(out / r.doppler_file))
        g = cv2.imread(str(out / r.gs_file))
        assert d.shape == g.shape and (g[:, :, 0] == g[:, :, 2]).all()
        assert not doppler_mask(g).any()
        assert doppler_mask(d).any() == (r.vs > 0)
    gs, dop, labels, _ = load_arrays(out, PreprocessParams(input_size=64))
    assert gs.shape == dop.shape == (14, 64, 64, 3) and labels.shape == (14, 3)


def test_dataset_is_deterministic_and_refuses_non_empty(tmp_path):
    a = write_dataset(tmp_path / "a", n=6, seed=7)
    b = write_dataset(tmp_path / "b", n=6, seed=7)
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    for f in sorted((a / "images").iterdir()):
        assert f.read_bytes() == (b / "images" / f.name).read_bytes()
    with pytest.raises(RatingEdgeError, match="not an empty folder"):
        write_dataset(a, n=6, seed=7)
    with pytest.raises(RatingEdgeError, match="patients"):
        write_dataset(tmp_path / "c", n=6, patients=9)
    with pytest.raises(RatingEdgeError, match="doppler"):
        write_dataset(tmp_path / "c", n=6, doppler="both")
    with pytest.raises(RatingEdgeError, match="seed"):
        write_dataset(tmp_path / "c", n=6, seed=-1)


def test_cli_dataset_and_video(tmp_path):
    r = CliRunner()
    res = r.invoke(app, ["phantom", "dataset", str(tmp_path / "ds"), "--n", "8", "--seed", "2", "--doppler", "pdus"])
    assert res.exit_code == 0, res.output
    assert len(read_labels(tmp_path / "ds")) == 8
    res = r.invoke(app, ["phantom", "dataset", str(tmp_path / "ds"), "--n", "8"])
    assert res.exit_code != 0 and isinstance(res.exception, RatingEdgeError)

    res = r.invoke(app, ["phantom", "video", str(tmp_path / "v.mp4"), "--seconds", "1", "--fps", "8",
                         "--size", "320x240", "--layout", "dual", "--seed", "1", "--theme", "halcyon", "--dropouts"])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "v.mp4.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["layout"] == "dual"
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8


@pytest.mark.parametrize("args,msg", [
    (["--size", "12x12"], "size"),
    (["--size", "wide"], "WIDTHxHEIGHT"),
    (["--layout", "quad"], "layout"),
    (["--theme", "acme"], "theme"),
])
def test_cli_video_errors_are_one_line(tmp_path, capsys, args, msg):
    rc = main(["phantom", "video", str(tmp_path / "v.mp4"), "--seconds", "1"] + args)
    assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "v.mp4").exists()


def test_cli_dataset_and_video_value_errors(tmp_path, capsys):
    assert main(["phantom", "dataset", str(tmp_path / "d"), "--n", "0"]) == 2
    assert main(["phantom", "video", str(tmp_path / "v.mp4"), "--seconds", "0", "--size", "320x240"]) == 2
    assert main(["phantom", "video", str(tmp_path / "v.mp4"), "--fps", "0", "--size", "320x240"]) == 2
    err = capsys.readouterr().err
    assert "at least 1" in err and "positive" in err and "fps" in err


def test_example_images(tmp_path):
    from rating_edge.phantom.examples import write_examples

    files = write_examples(tmp_path)
    assert {f.name for f in files} == {"phantom_gs.jpg", "phantom_cdus.jpg", "phantom_pdus.jpg", "phantom_grades.jpg",
                                       "phantom_screen_single.jpg", "phantom_screen_dual.jpg"}
    for f in files:
        assert cv2.imread(str(f)) is not None
