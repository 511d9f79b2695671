"""RESULTS: Parquet per study, written so that a killed run can be resumed without rescoring.

Layout: RESULTS/pairs/<study>.parquet (one row per scored pair), RESULTS/sections/<study>.parquet
(per joint section: MULTITUDE over every pair of the section x the package's models, the way the
runtime pools recent pairs), RESULTS/sr/<study>.dcm (with --sr) and RESULTS/studies/<study>.parquet
(the per-study summary). The summary is written last and atomically (temporary file, then rename), so
its presence is what marks a study finished; a study killed half-way has no summary and is scored
again. Read everything with `pyarrow.parquet.read_table(RESULTS / "pairs")`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from rating_edge.scoring import agreement_count, multitude

PARTS = ("pairs", "sections", "studies")


def _schemas():
    """Fixed schemas: a study whose ROIs are all None must not write a null-typed column that the
    other studies' files disagree with when the folder is read as one dataset."""
    import pyarrow as pa

    s, i, f, b = pa.string(), pa.int32(), pa.float64(), pa.bool_()
    li, lf, ls = pa.list_(pa.int32()), pa.list_(pa.float64()), pa.list_(pa.string())
    pairs = pa.schema([("study_uid", s), ("patient_id", s), ("section", i), ("layout", s),
                       ("gs_series_uid", s), ("gs_sop_uid", s), ("gs_frame", i),
                       ("doppler_series_uid", s), ("doppler_sop_uid", s), ("doppler_frame", i),
                       ("t_gs", f), ("t_doppler", f), ("similarity", f), ("roi_gs", li), ("roi_doppler", li),
                       ("area_gs", li), ("area_doppler", li), ("sh", i), ("vs", i), ("combined", i),
                       ("sh_agree", i), ("vs_agree", i), ("sh_models", li), ("vs_models", li),
                       ("sh_prob", lf), ("vs_prob", lf), ("prob_shape", li), ("infer_ms", f),
                       ("model_hash", s), ("backend", s), ("toolkit_version", s)])
    sections = pa.schema([("study_uid", s), ("section", i), ("pairs", i), ("votes", i), ("sh", i), ("vs", i),
                          ("combined", i), ("sh_agree", i), ("vs_agree", i), ("gs_sop_uids", ls),
                          ("doppler_sop_uids", ls), ("model_hash", s)])
    studies = pa.schema([("study_uid", s), ("patient_id", s), ("accession", s), ("instances", i), ("frames", i),
                         ("skipped_instances", i), ("pairs", i), ("pair_errors", i), ("sections", i),
                         ("max_combined", i), ("model_hash", s), ("toolkit_version", s), ("decode_s", f),
                         ("scored_at", s), ("sr_sop_uid", s), ("sr_stored", b), ("sr_error", s)])
    return {"pairs": pairs, "sections": sections, "studies": studies}


def study_file_stem(study_uid: str) -> str:
    """UIDs are dots and digits, safe as file names; anything else is hashed."""
    if study_uid and all(c.isdigit() or c == "." for c in study_uid) and len(study_uid) <= 64:
        return study_uid
    return "h" + hashlib.sha256(study_uid.encode()).hexdigest()[:32]


class Results:
    def __init__(self, root):
        self.root = Path(root)
        for part in (*PARTS, "sr"):
            (self.root / part).mkdir(parents=True, exist_ok=True)

    def done(self) -> set[str]:
        """Study UIDs with a summary (finished)."""
        import pyarrow.parquet as pq

        out = set()
        for p in (self.root / "studies").glob("*.parquet"):
            try:
                out.update(pq.read_table(p, columns=["study_uid"]).column("study_uid").to_pylist())
            except Exception:  # noqa: BLE001 - a torn file (should not happen: rename is atomic) is redone
                continue
        return out

    def _write(self, part: str, stem: str, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _schemas()[part]
        table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
        final = self.root / part / f"{stem}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)

    def write_study(self, summary: dict, pairs: list[dict], sections: list[dict]) -> None:
        stem = study_file_stem(summary["study_uid"])
        if pairs:
            self._write("pairs", stem, pairs)
        if sections:
            self._write("sections", stem, sections)
        self._write("studies", stem, [summary])  # last: the study is finished once this exists

    def sr_path(self, study_uid: str) -> Path:
        return self.root / "sr" / f"{study_file_stem(study_uid)}.dcm"

    def table(self, part: str):
        import pyarrow.parquet as pq

        files = sorted((self.root / part).glob("*.parquet"))
        if not files:
            return None
        return pq.read_table(files, schema=_schemas()[part])


def aggregate_sections(pairs: list[dict]) -> list[dict]:
    """Per joint section: MULTITUDE over all its pairs' per-model votes (pairs x models), agreement,
    and the instances it rests on."""
    by = {}
    for r in pairs:
        by.setdefault(r["section"], []).append(r)
    out = []
    for sec, rows in sorted(by.items()):
        sh_all = np.concatenate([np.asarray(r["sh_models"], np.int64) for r in rows])
        vs_all = np.concatenate([np.asarray(r["vs_models"], np.int64) for r in rows])
        sh, vs, comb = (int(v) for v in multitude(sh_all, vs_all))
        out.append({
            "study_uid": rows[0]["study_uid"], "section": int(sec), "pairs": len(rows), "votes": int(sh_all.size),
            "sh": sh, "vs": vs, "combined": comb,
            "sh_agree": int(agreement_count(sh_all, sh)), "vs_agree": int(agreement_count(vs_all, vs)),
            "gs_sop_uids": sorted({r["gs_sop_uid"] for r in rows}),
            "doppler_sop_uids": sorted({r["doppler_sop_uid"] for r in rows}),
            "model_hash": rows[0]["model_hash"]})
    return out
