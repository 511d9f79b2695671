"""A phantom ultrasound archive: scanner-screen frames stored as real ultrasound DICOM, with exact truth.

Retrospective scoring meets stored exams, not a video feed: per joint section the sonographer stores a
GS image and, some seconds later, a Doppler image or a short Doppler cine, all in one study per visit.
The frames come from the phantom scanner (the same screens the runtime sees live), so archive scoring
is tested with the runtime's own screen understanding and pairing, and every instance's section and
grades are known. Files follow the Ultrasound Image / Ultrasound Multi-frame Image IODs (patient,
study, series, equipment, image, cine and SOP common modules); the transfer syntax varies (explicit VR
little endian, RLE lossless, JPEG baseline) like real archives.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.video import PhantomScanner, parse_size

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
UID_ROOT = "1.2.826.0.1.3680043.10.1342."  # pydicom's generate_uid under a fixed prefix keeps runs reproducible
JOINTS = ("MCP2", "MCP3", "PIP2", "PIP3", "MCP4", "PIP4", "MCP5", "PIP5")
SYNTAXES = ("explicit", "rle", "jpeg")


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(UID_ROOT, entropy_srcs=[str(p) for p in parts])


def _section_frames(sc: PhantomScanner, k: int) -> tuple[int, list[int]]:
    """(frame of a live GS image, frames of live Doppler images) of section k on the scanner's timeline."""
    i = 0
    gs = dop = None
    while gs is None or dop is None:
        seg = sc._segment(i)
        if seg["section"] > k:
            break
        if seg["section"] == k and seg["kind"] == "live":
            if seg["mode"] == "gs" and gs is None:
                gs = seg
            elif seg["mode"] == "doppler" and dop is None:
                dop = seg
        i = seg["end"]
    if gs is None or (dop is None and sc.layout == "single"):
        raise RatingEdgeError(f"phantom section {k} has no live GS/Doppler segment")  # pragma: no cover
    # the GS image is stored just before Doppler is switched on, as sonographers do
    g = max(gs["start"], gs["end"] - 2) if sc.layout == "single" else (gs["start"] + gs["end"]) // 2
    if dop is None:
        return g, []
    d0 = min(dop["start"] + 2, dop["end"] - 1)
    return g, list(range(d0, min(d0 + 12, dop["end"]), 2))


def _dataset(sop_class: str, sop_uid: str, syntax: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _pixels(ds, frames_bgr: list, syntax: str) -> None:
    """Set the pixel data of RGB frames in one of the transfer syntaxes scanners send."""
    import cv2

    rgb = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames_bgr]
    if syntax == "jpeg":
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEGBaseline8Bit

        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        H, W = rgb[0].shape[:2]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = H, W, 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        if len(rgb) > 1:
            ds.NumberOfFrames = len(rgb)
        ds.PixelData = encapsulate([cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                                    for f in frames_bgr])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        return
    arr = np.stack(rgb) if len(rgb) > 1 else rgb[0]
    ds.set_pixel_data(arr, photometric_interpretation="RGB", bits_stored=8, generate_instance_uid=False)
    if syntax == "rle":
        from pydicom.uid import RLELossless

        ds.compress(RLELossless, generate_instance_uid=False)


def instance(img_frames: list, *, patient: dict, study: dict, series: dict, sop_uid: str, number: int,
             acquired: dt.datetime, syntax: str = "explicit", frame_time_ms: float = 66.7, comment: str = "",
             regions: str = "0001"):
    """One ultrasound instance (Image Storage for a still, Multi-frame Image Storage for a cine)."""
    from pydicom.tag import Tag

    cine = len(img_frames) > 1
    ds = _dataset(US_MULTIFRAME if cine else US_IMAGE, sop_uid, syntax)
    ds.PatientName, ds.PatientID = patient["name"], patient["id"]
    ds.PatientBirthDate, ds.PatientSex = patient["birth_date"], patient["sex"]
    ds.StudyInstanceUID, ds.StudyID = study["uid"], study["id"]
    ds.StudyDate, ds.StudyTime = study["date"], study["time"]
    ds.AccessionNumber, ds.ReferringPhysicianName = study["accession"], ""
    ds.StudyDescription = "US MSK hands (phantom)"
    ds.SeriesInstanceUID, ds.SeriesNumber = series["uid"], series["number"]
    ds.Modality, ds.SeriesDescription = "US", series["description"]
    ds.Manufacturer, ds.ManufacturerModelName = "rating-edge phantom", series["model"]
    ds.InstanceNumber = number
    ds.ContentDate = ds.AcquisitionDate = acquired.strftime("%Y%m%d")
    ds.ContentTime = ds.AcquisitionTime = acquired.strftime("%H%M%S.%f")
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S.%f")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", regions]  # US image type: hex OR of the region kinds shown
    ds.ImageComments = comment
    ds.BurnedInAnnotation = "YES"  # a scanner screen carries the patient banner
    _pixels(ds, img_frames, syntax)
    if cine:
        ds.NumberOfFrames = len(img_frames)
        ds.FrameTime = f"{frame_time_ms:.1f}"
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.CineRate = round(1000.0 / frame_time_ms)
    return ds


def write_dicom_archive(out, studies: int, seed: int = 0, size="640x360", cine_share: float = 0.3,
                        dual_share: float = 0.15, progress=None) -> Path:
    """Write `studies` phantom US studies under OUT/<patient>/<study>/ and OUT/truth.json.

    Each study: 2-4 joint sections; per section a GS still and a Doppler still or cine (`cine_share`),
    or in a dual-layout study (`dual_share`) one side-by-side image that is a pair by itself. Acquisition
    times space GS and Doppler of a section 6-20 s apart and sections 25-60 s apart.
    """
    out = Path(out)
    if studies < 1:
        raise RatingEdgeError(f"--studies must be >= 1, got {studies}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RatingEdgeError(f"{out} exists and is not an empty folder; choose a new one")
    W, H = parse_size(size)
    out.mkdir(parents=True, exist_ok=True)
    truth = {"format": "rating-edge phantom dicom archive v1", "seed": seed, "size": [W, H], "studies": []}
    for s in range(studies):
        rng = np.random.default_rng([seed, 17, s])
        layout = "dual" if rng.random() < dual_share else "single"
        sc = PhantomScanner(seed=seed * 100003 + s, size=(W, H), fps=15, layout=layout)
        pid = f"PH{seed:03d}{s:05d}"
        patient = {"name": f"PHANTOM^{s:05d}", "id": pid, "sex": "FM"[int(rng.integers(2))],
                   "birth_date": f"{int(rng.integers(1940, 2000))}0{int(rng.integers(1, 10))}15"}
        t = dt.datetime(2025, 1, 6, 8, 0) + dt.timedelta(days=int(rng.integers(0, 600)), minutes=int(rng.integers(0, 540)))
        study = {"uid": _uid(seed, s, "study"), "id": f"{s + 1}", "accession": f"A{seed:03d}{s:06d}",
                 "date": t.strftime("%Y%m%d"), "time": t.strftime("%H%M%S")}
        series = {"uid": _uid(seed, s, "series"), "number": 1, "description": "Hands MSK",
                  "model": f"PH-{sc.theme.logo}"}
        folder = out / pid / study["uid"]
        folder.mkdir(parents=True)
        st = {"study_uid": study["uid"], "patient_id": pid, "layout": layout, "doppler_kind": sc.kind, "sections": []}
        number = 0
        for k in range(int(rng.integers(2, 5))):
            g, ds_frames = _section_frames(sc, k)
            joint = f"{JOINTS[k % len(JOINTS)]} {'RL'[int(rng.integers(2))]}"
            sec = {"section": k, "joint": joint, "instances": []}
            shots = [("dual", [g])] if layout == "dual" else [("gs", [g])]
            if layout == "single":
                cine = rng.random() < cine_share
                shots.append(("doppler", ds_frames if cine else [ds_frames[0]]))
            for mode, idx in shots:
                number += 1
                imgs, truths = zip(*(sc.frame(i) for i in idx))
                grades = truths[0]["grades"]
                assert all(tr["section"] == k and tr["grades"] == grades for tr in truths)
                sec["grades"] = dict(grades)
                syntax = SYNTAXES[int(rng.integers(len(SYNTAXES)))] if len(idx) == 1 else ("rle", "explicit")[number % 2]
                sop = _uid(seed, s, "sop", number)
                comment = f"{joint} {'DOPPLER' if mode == 'doppler' else 'B-MODE' if mode == 'gs' else 'B+DOPPLER'}"
                ds = instance(list(imgs), patient=patient, study=study, series=series, sop_uid=sop, number=number,
                              acquired=t, syntax=syntax, frame_time_ms=1000.0 / sc.fps * 2, comment=comment,
                              regions="0001" if mode == "gs" else ("0011" if sc.kind == "cdus" else "0101"))
                ds.save_as(folder / f"IM{number:04d}.dcm", enforce_file_format=True)
                sec["instances"].append({"sop_uid": sop, "number": number, "mode": mode, "frames": len(idx),
                                         "syntax": syntax, "acquired": t.isoformat(),
                                         "areas": [tr["areas"] for tr in truths]})
                t += dt.timedelta(seconds=float(rng.uniform(6, 20)))
            st["sections"].append(sec)
            t += dt.timedelta(seconds=float(rng.uniform(25, 60)))
        truth["studies"].append(st)
        if progress is not None:
            progress(s)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return out
