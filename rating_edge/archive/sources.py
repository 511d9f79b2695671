"""Where studies come from (a folder tree of DICOM files or a DICOMweb server) and where SRs go.

Both sources are addressed by strings so they travel to Ray workers as plain data: each worker opens
its own files or its own HTTP session. Listing a folder needs every file's header (the study a file
belongs to is inside it), so it is done in chunks that the pipeline runs as tasks; a DICOMweb server
answers QIDO-RS queries for the study list and the instances of a study are fetched with WADO-RS
inside the decoding task.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from rating_edge.errors import RatingEdgeError
from rating_edge.runtime.capture import is_dicom

DICOMWEB = "dicomweb+"
LIST_CHUNK = 256  # files per header-reading task
QIDO_PAGE = 500


def is_dicomweb(source: str) -> bool:
    return str(source).startswith((DICOMWEB + "http://", DICOMWEB + "https://"))


def dicomweb_url(source: str) -> str:
    return str(source)[len(DICOMWEB):]


def dicomweb_client(source: str):
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError as e:  # pragma: no cover - install issue
        raise RatingEdgeError("DICOMweb needs dicomweb-client: pip install 'rating-edge[archive]'") from e
    return DICOMwebClient(url=dicomweb_url(source))


def check_source(source: str) -> str:
    s = str(source)
    if is_dicomweb(s):
        return s
    if s.startswith(("http://", "https://", "dicomweb://")):
        raise RatingEdgeError(f"{s}: write a DICOMweb server as dicomweb+http://HOST:PORT/PATH (e.g. "
                              "dicomweb+http://pacs:8042/dicom-web)")
    p = Path(s)
    if not p.is_dir():
        raise RatingEdgeError(f"{s}: not a folder of DICOM files or a dicomweb+http(s):// URL")
    return str(p.resolve())


def list_files(folder: str) -> list[str]:
    """DICOM files under a folder tree (by extension or the DICM preamble), sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            p = os.path.join(root, f)
            if not f.startswith(".") and is_dicom(p):
                out.append(p)
    return out


def read_headers(paths: list[str]) -> list[dict]:
    """Instance headers of files (pixel data not read); unreadable files are reported, not fatal."""
    import pydicom

    from rating_edge.archive.study import instance_header

    rows = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - a corrupt file must not stop an archive run
            rows.append({"study_uid": "", "location": p, "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        rows.append({**instance_header(ds, p), "error": ""})
    return rows


def group_studies(headers) -> tuple[list[dict], list[dict]]:
    """(studies: [{"study_uid", "locations"}], unreadable files) from instance headers."""
    studies: dict[str, list[str]] = {}
    bad = []
    for h in headers:
        if h.get("error") or not h.get("study_uid"):
            bad.append(h)
            continue
        studies.setdefault(h["study_uid"], []).append(h["location"])
    return [{"study_uid": k, "locations": sorted(v)} for k, v in sorted(studies.items())], bad


def list_dicomweb_studies(source: str) -> list[dict]:
    """Study UIDs on a DICOMweb server (QIDO-RS, paged)."""
    client = dicomweb_client(source)
    out, offset = [], 0
    while True:
        try:
            page = client.search_for_studies(offset=offset, limit=QIDO_PAGE)
        except Exception as e:  # noqa: BLE001 - requests/HTTP errors
            raise RatingEdgeError(f"{dicomweb_url(source)}: QIDO-RS study search failed ({str(e).splitlines()[0][:160]})") from None
        for st in page:
            uid = st.get("0020000D", {}).get("Value", [""])[0]
            if uid:
                out.append({"study_uid": uid, "locations": []})
        if len(page) < QIDO_PAGE:
            break
        offset += len(page)
    return sorted(out, key=lambda s: s["study_uid"])


def load_study(source: str, study: dict) -> list:
    """The pydicom datasets of one study, with pixel data."""
    import pydicom

    if is_dicomweb(source):
        client = dicomweb_client(source)
        try:
            # the stored transfer syntax (`*`), not the server's default: a PACS that transcodes lossy JPEG
            # on the way out decodes it with its own codec, and the pixels (so the scores) would differ from
            # the same study read from its files
            try:
                return list(client.retrieve_study(study["study_uid"], media_types=(("application/dicom", "*"),)))
            except Exception:  # noqa: BLE001 - servers without transfer-syntax=*: their default
                return list(client.retrieve_study(study["study_uid"]))
        except Exception as e:  # noqa: BLE001
            raise RatingEdgeError(f"WADO-RS retrieve of study {study['study_uid']} failed "
                                  f"({str(e).splitlines()[0][:160]})") from None
    return [pydicom.dcmread(p) for p in study["locations"]]


_DIMSE = re.compile(r"^dicom://(?P<aet>[^@/]+)@(?P<host>[^:/]+):(?P<port>\d+)/?$")


def parse_store(store: str | None):
    """`--store` target: ("dicomweb", url) or ("dimse", (called AET, host, port)) or None."""
    if not store:
        return None
    if is_dicomweb(store):
        return ("dicomweb", store)
    m = _DIMSE.match(store)
    if m:
        return ("dimse", (m["aet"], m["host"], int(m["port"])))
    raise RatingEdgeError(f"--store {store!r}: use dicomweb+http://HOST:PORT/PATH (STOW-RS) or "
                          "dicom://AET@HOST:PORT (C-STORE)")
