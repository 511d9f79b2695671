"""One stored study -> scoreable pairs, with the runtime's own screen understanding and pairing rules.

A study is replayed as the scanner showed it: instances in acquisition order, each cine frame at its
own time, through `LayoutDetector` and `Pairer`. The only differences from a live feed are that every
stored instance is a separate capture (the detector's frozen-state history is reset per instance,
since a stored still is a frozen image by nature) and that the GS-to-Doppler delay allowed between
stored images is longer (`max_age_s`, default 90 s: a sonographer stores GS, switches Doppler on,
adjusts it and stores again). Preprocessing happens here too, so the inference stage only runs the
engine: in the Ray pipeline decoding and preprocessing overlap inference.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs
from rating_edge.runtime.capture import dataset_frames
from rating_edge.runtime.layout import LayoutDetector, Profile
from rating_edge.runtime.pairing import Pairer

MAX_AGE_S = 90.0
HEADER_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
               "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def _s(v) -> str:
    return "" if v is None else str(v)


def acquired_seconds(ds) -> float | None:
    """Acquisition time of an instance in seconds since the epoch (AcquisitionDateTime, else
    Acquisition/Content date and time), or None when the file carries none."""
    text = _s(ds.get("AcquisitionDateTime")).strip()
    if not text:
        date = _s(ds.get("AcquisitionDate") or ds.get("ContentDate") or ds.get("StudyDate")).strip()
        time_ = _s(ds.get("AcquisitionTime") or ds.get("ContentTime")).strip()
        if not date or not time_:
            return None
        text = date + time_
    text = text.split("+")[0].split("-")[0]
    whole, _, frac = text.partition(".")
    whole = (whole + "000000")[:14] if len(whole) >= 8 else None
    if whole is None:
        return None
    try:
        t = dt.datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return t.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


def instance_header(ds, location: str = "") -> dict:
    """What listing, ordering, results and the SR need of one instance (no pixels)."""
    return {"study_uid": _s(ds.get("StudyInstanceUID")), "series_uid": _s(ds.get("SeriesInstanceUID")),
            "sop_uid": _s(ds.get("SOPInstanceUID")), "sop_class": _s(ds.get("SOPClassUID")),
            "modality": _s(ds.get("Modality")), "series_number": int(ds.get("SeriesNumber") or 0),
            "number": int(ds.get("InstanceNumber") or 0), "frames": int(ds.get("NumberOfFrames") or 1),
            "acquired": acquired_seconds(ds), "location": location}


def study_header(ds) -> dict:
    """Patient and study attributes copied into the SR (it joins the scored study)."""
    return {k: _s(ds.get(k)) for k in HEADER_KEYS}


def is_scoreable(h: dict) -> bool:
    """Ultrasound images (any SOP class with pixel data from a US modality); SRs and others are skipped."""
    return h["modality"] in ("US", "") and h["sop_class"] not in SR_CLASSES


SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22",
              "1.2.840.10008.5.1.4.1.1.88.11"}


def order_key(h: dict):
    return (h["acquired"] if h["acquired"] is not None else float("inf"), h["series_number"], h["number"], h["sop_uid"])


@dataclass
class StudyPairs:
    """The pairs of one study, preprocessed, with where each came from."""

    study_uid: str
    header: dict
    rows: list = field(default_factory=list)  # one dict per pair (see `pair_study`)
    gs: list = field(default_factory=list)  # engine inputs (S, S, 3) uint8, one per row
    doppler: list = field(default_factory=list)
    pairs: list = field(default_factory=list)  # runtime Pair objects (kept only with keep_pairs)
    instances: int = 0
    frames: int = 0
    skipped: int = 0  # instances that are not ultrasound images
    sop_classes: dict = field(default_factory=dict)  # sop_uid -> SOP class, for SR references


def pair_study(study_uid: str, datasets, params: PreprocessParams, profile: Profile | None = None,
               max_age_s: float = MAX_AGE_S, keep_pairs: bool = False) -> StudyPairs:
    """Pairs of one study from its pydicom datasets (any order), preprocessed to engine inputs.

    Row fields: section (the pairer's section counter, 1-based), layout, GS/Doppler series, SOP
    instance UIDs and 1-based frame numbers, their times, the similarity and the ROI in each crop."""
    items = []
    out = None
    for ds in datasets:
        h = instance_header(ds)
        if out is None:
            out = StudyPairs(study_uid, study_header(ds))
        if h["study_uid"] != study_uid:
            raise RatingEdgeError(f"instance {h['sop_uid']} belongs to study {h['study_uid']}, not {study_uid}")
        if not is_scoreable(h) or "PixelData" not in ds:
            out.skipped += 1
            continue
        items.append((h, ds))
    if out is None:
        raise RatingEdgeError(f"study {study_uid}: no instances")
    items.sort(key=lambda it: order_key(it[0]))
    profile = profile or Profile()
    det = LayoutDetector(profile)
    pairer = Pairer(max_age_s=max_age_s, roi=profile.roi, doppler_params=det.dp)
    where = []  # global frame index -> (header, 0-based frame, time)
    t_last = 0.0
    for h, ds in items:
        frames, fps = dataset_frames(ds, f"{study_uid}/{h['sop_uid']}")
        out.instances += 1
        out.sop_classes[h["sop_uid"]] = h["sop_class"]
        # without an acquisition time, instances are taken as stored one second apart, in instance order
        t0 = h["acquired"] if h["acquired"] is not None else t_last + 1.0
        t_last = t0 + len(frames) / fps
        det.reset()
        for f, img in enumerate(frames):
            index = len(where)
            t = t0 + f / fps
            where.append((h, f, t))
            out.frames += 1
            lo = det.detect(img)
            pair, _state = pairer.update(index, t, img, lo)
            if pair is None:
                continue
            (hg, fg, tg), (hd, fd, td) = where[pair.frame_gs], where[pair.frame_doppler]
            out.rows.append({
                "section": int(pair.section), "layout": pair.layout,
                "gs_series_uid": hg["series_uid"], "gs_sop_uid": hg["sop_uid"], "gs_frame": fg + 1,
                "doppler_series_uid": hd["series_uid"], "doppler_sop_uid": hd["sop_uid"], "doppler_frame": fd + 1,
                "t_gs": float(tg), "t_doppler": float(td),
                "similarity": float(pair.similarity),
                "roi_gs": list(pair.roi_gs) if pair.roi_gs else None,
                "roi_doppler": list(pair.roi_doppler) if pair.roi_doppler else None,
                "area_gs": list(pair.area_gs), "area_doppler": list(pair.area_doppler)})
            out.gs.append(prepare_gs(pair.gs_bgr, pair.roi_gs, params))
            out.doppler.append(prepare_doppler(pair.doppler_bgr, pair.roi_doppler, params))
            if keep_pairs:
                out.pairs.append(pair.detached(img))
        # the GS image held for later Doppler frames is a view of this instance's frames: copy it, so
        # only one instance's decoded frames are alive at a time
        pairer.detach(frames)
        del frames
    return out


def scoring_params(package) -> PreprocessParams:
    """The preprocessing the package's engine expects (as the runtime's Scorer derives it)."""
    params = package.preprocess
    size = getattr(package.spec, "input_size", None)
    if size and size != params.input_size:
        params = PreprocessParams.from_dict({**params.to_dict(), "input_size": size})
    return params


def empty_inputs(params: PreprocessParams) -> np.ndarray:
    s = params.input_size
    return np.zeros((s, s, 3), np.uint8)
