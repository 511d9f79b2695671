"""The labelled dataset layout that the phantom writes and real users bring (numpy + OpenCV only).

    DATA/
      labels.csv      pair_id, patient_id, gs_file, doppler_file, sh, vs, combined,
                      gs_roi, doppler_roi, doppler_kind
      images/         <pair_id>_gs.png, <pair_id>_doppler.png (any OpenCV-readable format)

ROIs are "x y w h" in pixels of their image (empty = whole image). `doppler_kind` is cdus or pdus
(informational). Grades are EOSS 0-3; SH = 0 implies VS = 0; combined = max(SH, VS).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs

COLUMNS = ["pair_id", "patient_id", "gs_file", "doppler_file", "sh", "vs", "combined",
           "gs_roi", "doppler_roi", "doppler_kind"]


@dataclass(frozen=True)
class PairRecord:
    pair_id: str
    patient_id: str
    gs_file: str
    doppler_file: str
    sh: int
    vs: int
    combined: int
    gs_roi: tuple | None
    doppler_roi: tuple | None
    doppler_kind: str = ""


def format_roi(roi) -> str:
    return "" if roi is None else " ".join(str(int(v)) for v in roi)


def parse_roi(text: str, where: str):
    text = (text or "").strip()
    if not text:
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != 4:
        raise RatingEdgeError(f"{where}: ROI {text!r} must be 'x y w h'")
    try:
        return tuple(int(float(p)) for p in parts)
    except ValueError:
        raise RatingEdgeError(f"{where}: ROI {text!r} is not numeric") from None


def read_labels(data_dir) -> list[PairRecord]:
    data_dir = Path(data_dir)
    p = data_dir / "labels.csv"
    if not p.is_file():
        raise RatingEdgeError(f"{data_dir}: no labels.csv; see README 'Dataset layout'")
    out = []
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("pair_id", "gs_file", "doppler_file", "sh", "vs") if c not in (reader.fieldnames or [])]
        if missing:
            raise RatingEdgeError(f"{p}: missing column {missing[0]!r}; columns are {COLUMNS}")
        for i, row in enumerate(reader, start=2):
            where = f"{p}:{i}"
            try:
                sh, vs = int(row["sh"]), int(row["vs"])
            except ValueError:
                raise RatingEdgeError(f"{where}: grades must be integers 0-3") from None
            if not (0 <= sh <= 3 and 0 <= vs <= 3):
                raise RatingEdgeError(f"{where}: grades must lie in 0-3 (sh={sh}, vs={vs})")
            comb = int(row.get("combined") or max(sh, vs))
            out.append(PairRecord(row["pair_id"], row.get("patient_id") or row["pair_id"], row["gs_file"],
                                  row["doppler_file"], sh, vs, comb, parse_roi(row.get("gs_roi", ""), where),
                                  parse_roi(row.get("doppler_roi", ""), where), row.get("doppler_kind", "")))
    if not out:
        raise RatingEdgeError(f"{p}: no pairs")
    return out


def write_labels(data_dir, records: list[PairRecord]) -> Path:
    p = Path(data_dir) / "labels.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in records:
            w.writerow([r.pair_id, r.patient_id, r.gs_file, r.doppler_file, r.sh, r.vs, r.combined,
                        format_roi(r.gs_roi), format_roi(r.doppler_roi), r.doppler_kind])
    return p


def read_image(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RatingEdgeError(f"{path}: cannot read image")
    return img


def load_pair(data_dir, rec: PairRecord, params: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    """One labelled pair -> network inputs (uint8 RGB), through the one preprocessing implementation."""
    d = Path(data_dir)
    return (prepare_gs(read_image(d / rec.gs_file), rec.gs_roi, params),
            prepare_doppler(read_image(d / rec.doppler_file), rec.doppler_roi, params))


def load_arrays(data_dir, params: PreprocessParams, records=None):
    """(gs (N,S,S,3), doppler (N,S,S,3), labels (N,3) [sh, vs, combined], records)."""
    records = records if records is not None else read_labels(data_dir)
    gs, dop = zip(*(load_pair(data_dir, r, params) for r in records))
    labels = np.array([[r.sh, r.vs, r.combined] for r in records], np.int64)
    return np.stack(gs), np.stack(dop), labels, records
