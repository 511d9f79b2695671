"""A real PACS round trip: phantom studies uploaded to Orthanc (DICOMweb plugin), scored through
DICOMweb on Ray, SRs stored back by STOW-RS and by C-STORE, read back by WADO-RS with the right grades.

Orthanc comes from the Debian packages `orthanc` and `orthanc-dicomweb` (.ci/install-orthanc.sh); the
fixture runs it on 127.0.0.1 with a temporary configuration and storage folder on free ports and stops
it by PID. The tests skip with the reason where Orthanc is not installed or does not start.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

pytest.importorskip("pydicom")
pytest.importorskip("onnxruntime")
pytest.importorskip("pyarrow")
pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    exe = shutil.which("Orthanc")
    if exe is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb: .ci/install-orthanc.sh)")
    if not os.path.exists(PLUGIN):
        pytest.skip(f"the Orthanc DICOMweb plugin is not installed ({PLUGIN}: apt-get install orthanc-dicomweb)")
    d = tmp_path_factory.mktemp("orthanc")
    http, dimse = _free_port(), _free_port()
    cfg = {"Name": "rating-edge-test", "StorageDirectory": str(d / "db"), "IndexDirectory": str(d / "db"),
           "HttpPort": http, "DicomPort": dimse, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True,
           "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
           "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "StableAge": 1}
    (d / "orthanc.json").write_text(json.dumps(cfg))
    log = open(d / "orthanc.log", "w")
    proc = subprocess.Popen([exe, str(d / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=d)
    base = f"http://127.0.0.1:{http}"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                pytest.skip(f"Orthanc exited at start (code {proc.returncode}): "
                            f"{(d / 'orthanc.log').read_text()[-300:]}")
            try:
                with urllib.request.urlopen(base + "/dicom-web/studies", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() - t0 > 60:
                pytest.skip("Orthanc did not answer on /dicom-web within 60 s")
            time.sleep(0.5)
        yield {"http": base, "dicomweb": f"dicomweb+{base}/dicom-web", "dimse": f"dicom://ORTHANC@127.0.0.1:{dimse}"}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def uploaded(orthanc, tmp_path_factory):
    """A small phantom archive uploaded to Orthanc by STOW-RS."""
    import pydicom

    from rating_edge.archive.sources import dicomweb_client
    from rating_edge.phantom.dicom import write_dicom_archive

    arch = tmp_path_factory.mktemp("pacs") / "dicom"
    write_dicom_archive(arch, 2, seed=9, cine_share=0.5, dual_share=0.0)
    client = dicomweb_client(orthanc["dicomweb"])
    client.store_instances([pydicom.dcmread(p) for p in sorted(arch.rglob("*.dcm"))])
    return arch


@pytest.fixture(scope="module")
def pkg(small_shared_stack_pkg):
    pytest.importorskip("torch")
    return small_shared_stack_pkg


def _srs(client, study_uid):
    return [ds for ds in client.retrieve_study(study_uid) if ds.Modality == "SR"]


@pytest.mark.slow
def test_orthanc_dicomweb_round_trip(orthanc, uploaded, pkg, tmp_path):
    pytest.importorskip("ray")
    from rating_edge.archive.pipeline import ArchiveConfig, run_local, run_ray
    from rating_edge.archive.results import Results
    from rating_edge.archive.sources import dicomweb_client
    from rating_edge.archive.sr import read_sr_grades

    cfg = ArchiveConfig(source=orthanc["dicomweb"], package=str(pkg), out=str(tmp_path / "r"), num_cpus=2, actors=1,
                        threads=1, sr=True, store=orthanc["dicomweb"])
    rep = run_ray(cfg)
    assert (rep.studies_total, rep.studies_done, rep.studies_failed) == (2, 2, 0), rep
    assert rep.srs_stored == 2 and rep.pairs > 0
    # the same studies read from the files give the same pairs and grades (DICOMweb changes nothing)
    run_local(ArchiveConfig(source=str(uploaded), package=str(pkg), out=str(tmp_path / "f"), threads=1))
    key = ["study_uid", "doppler_sop_uid", "doppler_frame"]
    cols = key + ["gs_sop_uid", "sh", "vs", "combined"]
    a = Results(tmp_path / "r").table("pairs").to_pandas()[cols].sort_values(key).reset_index(drop=True)
    b = Results(tmp_path / "f").table("pairs").to_pandas()[cols].sort_values(key).reset_index(drop=True)
    assert a.equals(b)
    client = dicomweb_client(orthanc["dicomweb"])
    sections = Results(tmp_path / "r").table("sections").to_pylist()
    for st in Results(tmp_path / "r").table("studies").to_pylist():
        srs = _srs(client, st["study_uid"])
        assert [str(s.SOPInstanceUID) for s in srs] == [st["sr_sop_uid"]]
        want = {s["section"]: {k: s[k] for k in ("sh", "vs", "combined")}
                for s in sections if s["study_uid"] == st["study_uid"]}
        assert read_sr_grades(srs[0])["sections"] == want
    # a rerun skips the scored studies (the SRs in the PACS are not scored again as studies' images)
    rep2 = run_local(ArchiveConfig(source=orthanc["dicomweb"], package=str(pkg), out=str(tmp_path / "r"), threads=1))
    assert (rep2.studies_skipped, rep2.studies_done) == (2, 0)


def test_orthanc_c_store_and_scoring_skips_srs(orthanc, uploaded, pkg, tmp_path):
    """C-STORE (pynetdicom) into Orthanc's DICOM port; the SRs already in a study are not scored."""
    from rating_edge.archive.pipeline import ArchiveConfig, run_local
    from rating_edge.archive.results import Results
    from rating_edge.archive.sources import dicomweb_client
    from rating_edge.archive.sr import read_sr_grades

    cfg = ArchiveConfig(source=orthanc["dicomweb"], package=str(pkg), out=str(tmp_path / "c"), threads=1, sr=True,
                        store=orthanc["dimse"])
    rep = run_local(cfg)
    assert rep.studies_done == 2 and rep.srs_stored == 2, rep
    res = Results(tmp_path / "c")
    client = dicomweb_client(orthanc["dicomweb"])
    for st in res.table("studies").to_pylist():
        assert st["sr_stored"] and not st["sr_error"]
        got = {str(s.SOPInstanceUID): s for s in _srs(client, st["study_uid"])}
        # the SR's UIDs come from (study, model, toolkit): sending it again (here, or by the STOW test
        # before) leaves one report per study in the PACS, not two
        assert list(got) == [st["sr_sop_uid"]]
        assert read_sr_grades(got[st["sr_sop_uid"]])["sections"]


def test_store_failure_keeps_scores(uploaded, pkg, tmp_path):
    """A PACS that refuses the association: scores and SR files stay, the summary says why."""
    from rating_edge.archive.pipeline import ArchiveConfig, run_local
    from rating_edge.archive.results import Results

    port = _free_port()  # nothing listens there
    rep = run_local(ArchiveConfig(source=str(uploaded), package=str(pkg), out=str(tmp_path / "x"), threads=1,
                                  sr=True, store=f"dicom://NOBODY@127.0.0.1:{port}"))
    assert rep.studies_done == 2 and rep.srs_written == 2 and rep.srs_stored == 0
    for st in Results(tmp_path / "x").table("studies").to_pylist():
        assert not st["sr_stored"] and "no association" in st["sr_error"]
