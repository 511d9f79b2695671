"""Archive scoring: phantom DICOM archive, Ray pipeline == in-process loop == runtime Scorer, resume, SR."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("onnxruntime")
pytest.importorskip("pyarrow")
pytest.importorskip("highdicom")


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    """Three phantom studies: single layout with a cine, and one dual-layout study."""
    from rating_edge.phantom.dicom import write_dicom_archive

    out = tmp_path_factory.mktemp("arch") / "dicom"
    write_dicom_archive(out, 3, seed=4, cine_share=0.5, dual_share=0.34)
    return out


@pytest.fixture(scope="session")
def tiny_pkg(small_shared_stack_pkg):
    pytest.importorskip("torch")
    return small_shared_stack_pkg


def _cfg(archive, pkg, out, **kw):
    from rating_edge.archive.pipeline import ArchiveConfig

    return ArchiveConfig(source=str(archive), package=str(pkg), out=str(out), threads=1, **kw)


def test_phantom_dicom_archive(archive):
    import pydicom

    truth = json.loads((archive / "truth.json").read_text())
    assert len(truth["studies"]) == 3
    files = sorted(archive.rglob("*.dcm"))
    seen = {}
    for p in files:
        ds = pydicom.dcmread(p)
        seen[str(ds.SOPInstanceUID)] = ds
        assert ds.Modality == "US" and ds.PatientID and ds.StudyInstanceUID and ds.SeriesInstanceUID
        frames = int(ds.get("NumberOfFrames", 1))
        want = "1.2.840.10008.5.1.4.1.1.3.1" if frames > 1 else "1.2.840.10008.5.1.4.1.1.6.1"
        assert ds.SOPClassUID == want and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape[-3:] == (360, 640, 3)
    layouts = {st["layout"] for st in truth["studies"]}
    assert layouts == {"single", "dual"}
    for st in truth["studies"]:
        for sec in st["sections"]:
            assert set(sec["grades"]) == {"sh", "vs", "combined"}
            for ins in sec["instances"]:
                ds = seen[ins["sop_uid"]]  # the truth names real instances of the right study
                assert ds.StudyInstanceUID == st["study_uid"] and int(ds.get("NumberOfFrames", 1)) == ins["frames"]
    assert any(ins["frames"] > 1 for st in truth["studies"] for sec in st["sections"] for ins in sec["instances"])
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in seen.values()}
    assert len(syntaxes) >= 2, syntaxes


def test_in_process_matches_runtime_scorer_and_truth(archive, tiny_pkg, tmp_path):
    """The archive's pairs are the runtime's pairs (same GS/Doppler frames), graded exactly as the
    runtime's Scorer grades them; every pair joins GS and Doppler of one true section."""
    import pydicom

    from rating_edge.archive.evaluate import compare, truth_index
    from rating_edge.archive.pipeline import run_local
    from rating_edge.archive.results import Results
    from rating_edge.archive.study import pair_study, scoring_params
    from rating_edge.infer import make_runner
    from rating_edge.package import load_package
    from rating_edge.runtime.worker import Scorer

    rep = run_local(_cfg(archive, tiny_pkg, tmp_path / "r"))
    assert rep.studies_done == 3 and rep.pairs > 0 and rep.studies_failed == 0
    res = Results(tmp_path / "r")
    pairs = res.table("pairs").to_pylist()
    truth = truth_index(archive / "truth.json")
    cmp = compare(pairs, res.table("sections").to_pylist(), truth)
    assert cmp["pairs_same_section"] == cmp["pairs"]
    assert cmp["doppler_instances_paired"] >= 0.8 * cmp["doppler_instances"]
    pkg = load_package(tiny_pkg)
    scorer = Scorer(make_runner(pkg, "ort", threads=1).activate())
    got = {}
    for st in json.loads((archive / "truth.json").read_text())["studies"]:
        dss = [pydicom.dcmread(p) for p in (archive / st["patient_id"]).rglob("*.dcm")]
        sp = pair_study(st["study_uid"], dss, scoring_params(pkg), keep_pairs=True)
        for row, pair in zip(sp.rows, sp.pairs):
            r = scorer.score(pair)
            assert r.ok, r.error
            got[(row["doppler_sop_uid"], row["doppler_frame"])] = (r.scores, r.sh_prob)
    assert len(got) == len(pairs)
    for p in pairs:
        sc, sh_prob = got[(p["doppler_sop_uid"], p["doppler_frame"])]
        assert (p["sh"], p["vs"], p["combined"]) == (int(sc["sh"]), int(sc["vs"]), int(sc["combined"]))
        assert np.array_equal(np.asarray(p["sh_prob"]), sh_prob.astype(np.float64).ravel())
        assert p["model_hash"] == pkg.model_hash and len(p["roi_doppler"] or [0] * 4) == 4


@pytest.mark.slow
def test_ray_equals_in_process_and_resumes(archive, tiny_pkg, tmp_path):
    pytest.importorskip("ray")
    from rating_edge.archive.pipeline import run_local, run_ray
    from rating_edge.archive.results import Results

    run_local(_cfg(archive, tiny_pkg, tmp_path / "local"))
    # one study already finished: the Ray run must skip it and score the others
    first = sorted((tmp_path / "local" / "studies").glob("*.parquet"))[0]
    (tmp_path / "ray" / "studies").mkdir(parents=True)
    (tmp_path / "ray" / "studies" / first.name).write_bytes(first.read_bytes())
    rep = run_ray(_cfg(archive, tiny_pkg, tmp_path / "ray", num_cpus=2, actors=1, batch=3, sr=True))
    assert (rep.studies_total, rep.studies_skipped, rep.studies_done) == (3, 1, 2), rep
    assert rep.srs_written == 2
    import ray

    assert not ray.is_initialized()  # shut down after the run
    key = ["study_uid", "doppler_sop_uid", "doppler_frame"]
    a = Results(tmp_path / "local").table("pairs").to_pandas()
    b = Results(tmp_path / "ray").table("pairs").to_pandas()
    a = a[a.study_uid.isin(set(b.study_uid))].sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    for col in ("gs_sop_uid", "gs_frame", "section", "sh", "vs", "combined", "sh_agree", "vs_agree"):
        assert a[col].tolist() == b[col].tolist(), col
    for col in ("sh_prob", "vs_prob", "roi_doppler"):
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col])), col
    # a rerun finds everything done and rescoring nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.parquet")}
    rep2 = run_ray(_cfg(archive, tiny_pkg, tmp_path / "ray", num_cpus=2, actors=1))
    assert (rep2.studies_skipped, rep2.studies_done) == (3, 0)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.parquet")}


def test_sr_content_round_trip(archive, tiny_pkg, tmp_path):
    import pydicom

    from rating_edge.archive.pipeline import run_local
    from rating_edge.archive.results import Results
    from rating_edge.archive.sr import read_sr_grades

    rep = run_local(_cfg(archive, tiny_pkg, tmp_path / "r", sr=True))
    assert rep.srs_written == 3
    res = Results(tmp_path / "r")
    sections = res.table("sections").to_pylist()
    studies = {s["study_uid"]: s for s in res.table("studies").to_pylist()}
    for uid, st in studies.items():
        sr = pydicom.dcmread(res.sr_path(uid))
        assert sr.Modality == "SR" and sr.StudyInstanceUID == uid and sr.SOPInstanceUID == st["sr_sop_uid"]
        assert sr.PatientID == st["patient_id"]
        got = read_sr_grades(sr)
        want = {s["section"]: {k: s[k] for k in ("sh", "vs", "combined")} for s in sections if s["study_uid"] == uid}
        assert got["sections"] == want and st["model_hash"] in got["parameters"]
        refs = {r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for it in sr.ContentSequence if it.ValueType == "CONTAINER" for r in it.ContentSequence
                if r.ValueType == "IMAGE"}
        used = {u for s in sections if s["study_uid"] == uid for u in s["gs_sop_uids"] + s["doppler_sop_uids"]}
        assert refs == used
    again = run_local(_cfg(archive, tiny_pkg, tmp_path / "again", sr=True))
    assert again.srs_written == 3
    assert {s["sr_sop_uid"] for s in Results(tmp_path / "again").table("studies").to_pylist()} == \
        {s["sr_sop_uid"] for s in studies.values()}  # same study + model: same SR, stored once by a PACS


def test_cli_errors(tmp_path, capsys):
    from rating_edge.cli import main

    assert main(["archive", "score", str(tmp_path / "nope"), "--package", str(tmp_path), "--out",
                 str(tmp_path / "o"), "--in-process"]) == 2
    assert "not a folder of DICOM files" in capsys.readouterr().err
    assert main(["archive", "score", "http://pacs/dicom-web", "--package", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "dicomweb+http" in capsys.readouterr().err
    from rating_edge.archive.sources import parse_store

    assert parse_store("dicom://ORTHANC@127.0.0.1:4242") == ("dimse", ("ORTHANC", "127.0.0.1", 4242))
    with pytest.raises(Exception, match="C-STORE"):
        parse_store("pacs:104")


def test_dead_ray_address_fails_fast(archive, tiny_pkg, tmp_path, capsys):
    """Nothing listening at --ray-address: a one-line error in seconds, not Ray's minutes of retries."""
    import socket
    import time

    from rating_edge.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    assert main(["archive", "score", str(archive), "--package", str(tiny_pkg), "--out", str(tmp_path / "o"),
                 "--ray-address", f"127.0.0.1:{port}"]) == 2
    assert "no Ray cluster answers" in capsys.readouterr().err and time.time() - t0 < 60


def test_unreadable_study_is_reported_and_retried(archive, tiny_pkg, tmp_path):
    """A study that cannot be decoded is logged in errors.jsonl, gets no summary, and is tried again."""
    import shutil

    from rating_edge.archive.pipeline import run_local

    src = tmp_path / "src"
    shutil.copytree(archive, src)
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    victim = next(p for p in sorted(src.rglob("*.dcm"))
                  if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian)
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated pixel data: cannot be decoded
    ds.save_as(victim)
    rep = run_local(_cfg(src, tiny_pkg, tmp_path / "r"))
    assert rep.studies_failed == 1 and rep.studies_done == 2
    assert "errors.jsonl" in os.listdir(tmp_path / "r")
    rep2 = run_local(_cfg(src, tiny_pkg, tmp_path / "r"))
    assert rep2.studies_skipped == 2 and rep2.studies_failed == 1


def test_cli_phantom_dicom_and_in_process_score(tiny_pkg, tmp_path):
    from rating_edge.cli import main

    arch = tmp_path / "a"
    assert main(["phantom", "dicom", str(arch), "--studies", "1", "--seed", "2", "--size", "480x270"]) == 0
    assert main(["phantom", "dicom", str(arch), "--studies", "1"]) == 2  # never writes into a full folder
    rep = tmp_path / "rep.json"
    assert main(["archive", "score", str(arch), "--package", str(tiny_pkg), "--out", str(tmp_path / "r"),
                 "--in-process", "--report", str(rep)]) == 0
    d = json.loads(rep.read_text())
    assert d["mode"] == "in-process" and d["studies_done"] == 1 and d["pairs"] > 0
    assert main(["archive", "show", str(tmp_path / "r"), "--truth", str(arch / "truth.json")]) == 0
    from rating_edge.archive.evaluate import summarise

    out = summarise(tmp_path / "r", arch / "truth.json")
    assert out["studies"] == 1 and out["truth"]["pairs_same_section"] == out["truth"]["pairs"] == d["pairs"]


def test_archive_scoring_does_not_import_torch():
    """Archive workers are runtime-sized: scoring modules pull in no torch (Ray workers import them)."""
    import subprocess
    import sys

    code = ("import sys; import rating_edge.archive.pipeline, rating_edge.archive.sr, rating_edge.archive.bench, "
            "rating_edge.phantom.dicom; bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print(len(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr[-500:]
