"""One DICOM Comprehensive SR per scored study: the EOSS grades per joint section, where PACS users look.

Content tree (highdicom): a root container "RATING synovitis scoring" with the algorithm's identity
(DCM 111001 Algorithm Name, 111003 Algorithm Version, 111002 Algorithm Parameters = model hash and
backend), then one "Finding" container per joint section holding three coded grades (SH, VS, combined:
concept and value codes in this toolkit's private scheme 99RATEDGE, since EOSS grades have no
standard codes), the model agreement and IMAGE references to the GS and Doppler instances the grades
rest on. The SR joins the scored study (same patient and study, its own series) and lists every
referenced instance as evidence. `read_sr_grades` parses a stored SR back for checks and audits.
"""
from __future__ import annotations

from rating_edge import __version__
from rating_edge.errors import RatingEdgeError

SCHEME = "99RATEDGE"
GRADE_KEYS = ("sh", "vs", "combined")
_MEANING = {"sh": "Synovial hypertrophy EOSS grade", "vs": "Doppler (vascularity) EOSS grade",
            "combined": "Combined EOSS grade"}
_CODE = {"sh": "SH", "vs": "VS", "combined": "COMB"}


def _c(value, meaning, scheme=SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, scheme, meaning)


def _evidence(header: dict, refs: dict, series_of: dict):
    """Minimal datasets that identify each referenced instance (what the SR's evidence needs)."""
    from pydicom.dataset import Dataset

    out = []
    for sop, cls in refs.items():
        ds = Dataset()
        for k, v in header.items():
            setattr(ds, k, v)
        ds.SeriesInstanceUID = series_of[sop]
        ds.SOPClassUID, ds.SOPInstanceUID = cls, sop
        ds.Modality = "US"
        out.append(ds)
    return out


def build_sr(info: dict, sections: list[dict], pairs: list[dict], model_hash: str, backend: str):
    """The SR dataset of one study from its summary info, section aggregates and pair rows."""
    import highdicom as hd
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        ContainerContentItem,
        ContentSequence,
        ImageContentItem,
        NumContentItem,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if not sections:
        raise RatingEdgeError(f"study {info['study_uid']}: no scored section, no SR to write")
    classes = info.get("sop_classes", {})
    series_of = {}
    for r in pairs:
        series_of[r["gs_sop_uid"]] = r["gs_series_uid"]
        series_of[r["doppler_sop_uid"]] = r["doppler_series_uid"]
    items = [
        TextContentItem(codes.DCM.AlgorithmName, "RATING ensemble (rating-edge)", relationship_type="HAS CONCEPT MOD"),
        TextContentItem(codes.DCM.AlgorithmVersion, __version__, relationship_type="HAS CONCEPT MOD"),
        TextContentItem(codes.DCM.AlgorithmParameters, f"model {model_hash}; backend {backend}",
                        relationship_type="HAS CONCEPT MOD"),
    ]
    refs = {}
    for sec in sections:
        kids = [TextContentItem(_c("SECTION", "Joint section"), f"section {sec['section']}",
                                relationship_type="HAS CONCEPT MOD")]
        for k in GRADE_KEYS:
            g = int(sec[k])
            kids.append(CodeContentItem(_c(_CODE[k], _MEANING[k]), _c(f"{_CODE[k]}{g}", f"{_MEANING[k]} {g}"),
                                        relationship_type="CONTAINS"))
        for k in ("sh_agree", "vs_agree"):
            kids.append(NumContentItem(_c(k.upper(), f"{k.split('_')[0].upper()} model votes for the grade"),
                                       int(sec[k]), hd.sr.CodedConcept("{votes}", "UCUM", "votes"),
                                       relationship_type="CONTAINS"))
        for role, uids in (("GS", sec["gs_sop_uids"]), ("DOPPLER", sec["doppler_sop_uids"])):
            for sop in uids:
                cls = classes.get(sop)
                if not cls:
                    continue
                refs[sop] = cls
                kids.append(ImageContentItem(_c(f"{role}IMG", f"{role} image of the section"), cls, sop,
                                             relationship_type="CONTAINS"))
        box = ContainerContentItem(codes.DCM.Finding, relationship_type="CONTAINS")
        box.ContentSequence = ContentSequence(kids)
        items.append(box)
    root = ContainerContentItem(_c("RATINGRPT", "RATING synovitis scoring report"))
    root.ContentSequence = ContentSequence(items)
    header = info["header"]
    # UIDs from (study, model, toolkit): a run killed after sending an SR but before recording the study
    # sends the same SR again on the rerun, which a PACS stores once, instead of a second report
    key = [info["study_uid"], model_hash, __version__]
    sr = ComprehensiveSR(
        evidence=_evidence(header, refs, series_of), content=root,
        series_instance_uid=generate_uid(entropy_srcs=key + ["series"]), series_number=900,
        sop_instance_uid=generate_uid(entropy_srcs=key + ["sr"]), instance_number=1,
        manufacturer="rating-edge", is_complete=True, is_final=False, is_verified=False,
        series_description="RATING synovitis scores (AI, not verified)")
    return sr


def read_sr_grades(sr) -> dict:
    """{section number: {"sh", "vs", "combined"}} and the algorithm parameters from a stored SR."""
    out, params = {}, ""
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "TEXT" and name == "111002":
            params = str(item.TextValue)
        if item.ValueType != "CONTAINER":
            continue
        sec, grades = None, {}
        for kid in item.get("ContentSequence", []):
            code = kid.ConceptNameCodeSequence[0].CodeValue
            if kid.ValueType == "TEXT" and code == "SECTION":
                sec = int(str(kid.TextValue).split()[-1])
            if kid.ValueType == "CODE":
                key = {v: k for k, v in _CODE.items()}.get(code)
                if key:
                    grades[key] = int(kid.ConceptCodeSequence[0].CodeValue[len(code):])
        if sec is not None:
            out[sec] = grades
    return {"sections": out, "parameters": params}


def store_sr(sr, target) -> None:
    """Send an SR to a PACS: ("dicomweb", url) by STOW-RS or ("dimse", (aet, host, port)) by C-STORE."""
    kind, where = target
    if kind == "dicomweb":
        from rating_edge.archive.sources import dicomweb_client, dicomweb_url

        try:
            dicomweb_client(where).store_instances([sr])
        except Exception as e:  # noqa: BLE001
            raise RatingEdgeError(f"STOW-RS to {dicomweb_url(where)} failed ({str(e).splitlines()[0][:160]})") from None
        return
    from pynetdicom import AE

    aet, host, port = where
    ae = AE(ae_title="RATINGEDGE")
    ae.add_requested_context(sr.SOPClassUID, sr.file_meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=aet)
    if not assoc.is_established:
        raise RatingEdgeError(f"C-STORE: no association with {aet}@{host}:{port} (check the AE title, host and port)")
    try:
        status = assoc.send_c_store(sr)
    finally:
        assoc.release()
    if not status or int(status.get("Status", 0xFFFF)) != 0:
        code = int(status.Status) if status and "Status" in status else None
        raise RatingEdgeError(f"C-STORE to {aet}@{host}:{port} refused the SR (status {code if code is not None else 'none'})")
