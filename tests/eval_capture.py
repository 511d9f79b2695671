"""Screen understanding on real screens as a capture card would deliver them: fitted into 1920x1080 or
1280x720 with black bars, stretched, JPEG-compressed. The truth boxes follow the same transform and each
frame is judged like `rating-edge inspect --eval` (layout, IoU >= 0.7, mode, no extra area).
Not a test (the real screens are not in the repository):
`.venv/bin/python tests/eval_capture.py [../shared/real-screens/truth.json]`."""
import json, sys
from pathlib import Path
import cv2, numpy as np
from rating_edge.runtime.capture import dicom_frames
from rating_edge.runtime.layout import LayoutDetector
from rating_edge.runtime.screen_eval import judge, load_truth

truth_path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "real-screens" / "truth.json")
truth = load_truth(truth_path)

def fit(img, W, H, stretch=False):
    h, w = img.shape[:2]
    if stretch:
        sx, sy, ox, oy = W / w, H / h, 0, 0
    else:
        s = min(W / w, H / h); sx = sy = s
        ox, oy = (W - round(w * s)) // 2, (H - round(h * s)) // 2
    out = np.zeros((H, W, 3), np.uint8)
    r = cv2.resize(img, (round(w * sx), round(h * sy)), interpolation=cv2.INTER_LINEAR)
    out[oy:oy + r.shape[0], ox:ox + r.shape[1]] = r[:H - oy, :W - ox]
    return out, (sx, sy, ox, oy)

def jpeg(img, q=70):
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)

def tbox(b, t):
    sx, sy, ox, oy = t
    return [round(b[0] * sx + ox), round(b[1] * sy + oy), round(b[2] * sx), round(b[3] * sy)]

def ttruth(tr, t):
    out = {"layout": tr["layout"], "areas": []}
    for a in tr["areas"]:
        a2 = dict(a); a2["box"] = tbox(a["box"], t)
        if a.get("box_alt"): a2["box_alt"] = tbox(a["box_alt"], t)
        out["areas"].append(a2)
    return out

variants = {
    "original": lambda im: (im, (1, 1, 0, 0)),
    "fit 1920x1080": lambda im: fit(im, 1920, 1080),
    "fit 1280x720": lambda im: fit(im, 1280, 720),
    "stretch 1920x1080": lambda im: fit(im, 1920, 1080, True),
    "fit 1920x1080 + jpeg70": lambda im: (lambda r: (jpeg(r[0]), r[1]))(fit(im, 1920, 1080)),
    "jpeg50": lambda im: (jpeg(im, 50), (1, 1, 0, 0)),
}
tot = {}
for name, frames in truth.items():
    cine = dicom_frames(truth_path.parent / name)[0]
    for key, tr in frames.items():
        k = int(key[5:])
        for vname, fn in variants.items():
            det = LayoutDetector()
            if k > 0:
                det.detect(fn(cine[k - 1])[0])
            img, t = fn(cine[k])
            found = det.detect(img).to_json()
            ok, reasons, ious = judge(found, ttruth(tr, t))
            tot.setdefault(vname, []).append(ok)
            if not ok:
                print(f"WRONG {vname:24s} {name} {key}: {reasons} ious {ious}")
for v, oks in tot.items():
    print(f"{v:26s} {sum(oks)}/{len(oks)}")
