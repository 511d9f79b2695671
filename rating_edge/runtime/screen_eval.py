"""Screen-understanding evaluation against hand-made truth of real scanner screens (`inspect --eval`).

Truth format (one JSON file beside the screens): {file: {"frameK": {"layout": "single"|"dual"|"none",
"areas": [{"box": [x, y, w, h], "box_alt": optional [x, y, w, h], "mode": "gs"|"doppler", ...}]}}}.
A frame is right when the layout matches, every true area is matched (one to one) by a found area with
IoU >= 0.7 against its box or box_alt and the same mode, and no other area is found. Reporting why a
frame is wrong (which check, the best IoU per true area) is the point: the numbers guide the detector's
design, they are not something to tune it to.
"""
from __future__ import annotations

import json
from pathlib import Path

from rating_edge.errors import RatingEdgeError

MIN_IOU = 0.7


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - ix * iy
    return ix * iy / union if union > 0 else 0.0


def load_truth(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RatingEdgeError(f"truth file {path} does not exist")
    try:
        truth = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RatingEdgeError(f"truth file {path}: not JSON ({e})") from None
    if not isinstance(truth, dict) or not truth:
        raise RatingEdgeError(f"truth file {path}: expected {{file: {{'frame0': {{...}}}}}}")
    for name, frames in truth.items():
        if not isinstance(frames, dict):
            raise RatingEdgeError(f"truth file {path}: {name!r} must map 'frameK' keys to frame truth")
        for key, t in frames.items():
            if not (key.startswith("frame") and key[5:].isdigit()) or not isinstance(t, dict) \
                    or t.get("layout") not in ("single", "dual", "none") or not isinstance(t.get("areas"), list):
                raise RatingEdgeError(f"truth file {path}: {name}/{key} needs 'frameK' with layout and areas")
    return truth


def judge(found: dict, t: dict) -> tuple[bool, list, list]:
    """(right, reasons, best IoU per true area) for one frame's `inspect --json` result."""
    reasons = []
    true_layout = t["layout"]
    got_layout = found["layout"] if found["areas"] else "none"
    if true_layout != "none" and got_layout != true_layout:
        reasons.append(f"layout {got_layout} (truth {true_layout})")
    left = list(range(len(found["areas"])))
    best_ious = []
    for k, ta in enumerate(t["areas"]):
        boxes = [ta["box"]] + ([ta["box_alt"]] if ta.get("box_alt") else [])
        scored = sorted(((max(iou(found["areas"][i]["box"], b) for b in boxes), i) for i in left), reverse=True)
        best = scored[0] if scored else (0.0, None)
        best_ious.append(round(best[0], 3))
        if best[1] is None or best[0] < MIN_IOU:
            reasons.append(f"area {k}: best IoU {best[0]:.2f} < {MIN_IOU}")
            continue
        left.remove(best[1])
        got_mode = found["areas"][best[1]]["mode"]
        if got_mode != ta["mode"]:
            reasons.append(f"area {k}: mode {got_mode} (truth {ta['mode']})")
    if left:
        reasons.append(f"{len(left)} extra area(s) {[found['areas'][i]['box'] for i in left]}")
    return not reasons, reasons, best_ious


def _doppler_ious(found: dict, t: dict) -> list:
    """Per true area with a Doppler box: the best IoU of a found Doppler box with it (information for
    the ROI, not part of right/wrong; the truth's box is +-5 px by eye), None where none applies."""
    out = []
    for ta in t["areas"]:
        if not ta.get("doppler_box"):
            out.append(None)
            continue
        got = [a["doppler_box"] for a in found["areas"] if a.get("doppler_box")]
        out.append(round(max((iou(g, ta["doppler_box"]) for g in got), default=0.0), 3))
    return out


def evaluate(truth_path, profile=None) -> dict:
    """Run `inspect` on every truth frame (the frame before it first, as inspect does) and judge it.
    An unreadable file or a detector failure makes its frames wrong with the reason; it never stops
    the evaluation."""
    from rating_edge.runtime.capture import dicom_frames, is_dicom, read_one_frame
    from rating_edge.runtime.layout import LayoutDetector, Profile

    truth_path = Path(truth_path)
    truth = load_truth(truth_path)
    folder = truth_path.parent
    rows = []
    for name, frames in truth.items():
        path = folder / name
        cine = None
        for key, t in sorted(frames.items(), key=lambda kv: int(kv[0][5:])):
            k = int(key[5:])
            row = {"file": name, "frame": k}
            try:
                if cine is None and is_dicom(path):
                    cine = dicom_frames(path)[0]
                get = (lambda i: cine[i]) if cine is not None else (lambda i: read_one_frame(str(path), i))
                if cine is not None and k >= len(cine):
                    raise RatingEdgeError(f"frame {k} out of range ({len(cine)} frames)")
                det = LayoutDetector(profile or Profile())
                if k > 0:
                    det.detect(get(k - 1))
                found = det.detect(get(k)).to_json()
                ok, reasons, ious = judge(found, t)
                row.update(right=ok, reasons=reasons, best_iou=ious, found=found,
                           doppler_box_iou=_doppler_ious(found, t))
            except RatingEdgeError as e:
                row.update(right=False, reasons=[f"unreadable: {e}"], best_iou=[], found=None)
            rows.append(row)
    right = sum(r["right"] for r in rows)
    return {"truth": str(truth_path), "right": right, "total": len(rows), "frames": rows}


def format_report(res: dict) -> list:
    lines = []
    for r in res["frames"]:
        f = r["found"]
        got = "-" if f is None else f"{f['layout']} " + ", ".join(
            f"{a['mode']} {a['box']}" for a in f["areas"]) if f and f["areas"] else (
            "-" if f is None else f"{f['layout']} no area")
        dop = [v for v in r.get("doppler_box_iou") or [] if v is not None]
        lines.append(f"{'right' if r['right'] else 'WRONG'}  {r['file']} frame {r['frame']}: IoU {r['best_iou']}; "
                     f"found {got}" + (f"; Doppler box IoU {dop}" if dop else "")
                     + ("" if r["right"] else f"; why: {'; '.join(r['reasons'])}"))
    lines.append(f"{res['right']}/{res['total']} frames right")
    return lines
