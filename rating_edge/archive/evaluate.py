"""RESULTS summaries, and accuracy against a phantom archive's truth (`rating-edge phantom dicom`)."""
from __future__ import annotations

import json
from pathlib import Path

from rating_edge.archive.results import Results
from rating_edge.errors import RatingEdgeError

GRADES = ("sh", "vs", "combined")


def truth_index(truth_path) -> dict:
    """sop_uid -> {"study", "section", "mode", "grades"} of a phantom archive's truth.json."""
    p = Path(truth_path)
    if not p.is_file():
        raise RatingEdgeError(f"{p}: no truth file (a phantom archive has OUT/truth.json)")
    t = json.loads(p.read_text())
    idx = {}
    for st in t["studies"]:
        for sec in st["sections"]:
            for ins in sec["instances"]:
                idx[ins["sop_uid"]] = {"study": st["study_uid"], "section": sec["section"], "mode": ins["mode"],
                                       "grades": sec["grades"]}
    return idx


def compare(pairs: list[dict], sections: list[dict], truth: dict) -> dict:
    """Pairing and grading against truth: pairs whose GS and Doppler show the same section, per-grade
    exact accuracy per pair and per section, and the share of Doppler instances that got a pair."""
    n = len(pairs)
    same = sum(truth[r["gs_sop_uid"]]["section"] == truth[r["doppler_sop_uid"]]["section"]
               and truth[r["gs_sop_uid"]]["study"] == truth[r["doppler_sop_uid"]]["study"] for r in pairs)
    acc = {g: sum(r[g] == truth[r["doppler_sop_uid"]]["grades"][g] for r in pairs) / n if n else None for g in GRADES}
    sec_acc = {}
    for g in GRADES:
        hits = [s[g] == truth[s["doppler_sop_uids"][0]]["grades"][g] for s in sections if s["doppler_sop_uids"]]
        sec_acc[g] = sum(hits) / len(hits) if hits else None
    dop = {k for k, v in truth.items() if v["mode"] in ("doppler", "dual")}
    scored_studies = {r["study_uid"] for r in pairs} | {s["study_uid"] for s in sections}
    dop_here = {k for k in dop if truth[k]["study"] in scored_studies}
    paired = {r["doppler_sop_uid"] for r in pairs}
    return {"pairs": n, "pairs_same_section": same, "pair_accuracy": acc, "sections": len(sections),
            "section_accuracy": sec_acc, "doppler_instances": len(dop_here),
            "doppler_instances_paired": len(dop_here & paired)}


def summarise(results, truth=None) -> dict:
    res = Results(results)
    studies = res.table("studies")
    if studies is None:
        raise RatingEdgeError(f"{results}: no scored study yet (run rating-edge archive score)")
    pairs = res.table("pairs")
    sections = res.table("sections")
    p = pairs.to_pylist() if pairs is not None else []
    s = sections.to_pylist() if sections is not None else []
    st = studies.to_pylist()
    out = {"studies": len(st), "pairs": len(p), "sections": len(s),
           "srs": sum(1 for r in st if r["sr_sop_uid"]), "srs_stored": sum(1 for r in st if r["sr_stored"]),
           "model_hashes": sorted({r["model_hash"] for r in st if r["model_hash"]}),
           "combined_histogram": {str(g): sum(1 for r in s if r["combined"] == g) for g in range(4)}}
    if truth is not None:
        out["truth"] = compare(p, s, truth_index(truth))
    return out
