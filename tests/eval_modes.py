"""Mode-detection agreement with the phantom truth: 5 themes x single/dual, 30 s at 1280x720, 15 fps, mp4v,
dropouts on (the README's figure), then the phantom screens with real-scanner geometries (fans apex up and
down, convex, linear, empty fans, touching duals, steered/fan Doppler boxes in grey/green/yellow; judged
like real screens: layout, IoU >= 0.7, mode, no extra area). Not a test (it takes minutes):
`.venv/bin/python tests/eval_modes.py [N_SCREENS]`."""
import json
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime_layout import agreement

from rating_edge.phantom import video
from rating_edge.phantom.screens import write_screens
from rating_edge.runtime.screen_eval import evaluate

tot = ok = 0; worst = (2, None)
d = Path(tempfile.mkdtemp())
for theme in ["aurora", "meridian", "halcyon", "sierra", "tundra"]:
    for layout in ["single", "dual"]:
        mp4, side = video.write_video(d / f"{theme}_{layout}.mp4", 30, fps=15, size=(1280, 720), layout=layout,
                                      seed=len(theme) + (layout == "dual"), theme=theme, dropouts=True)
        truth = [json.loads(x) for x in side.read_text().splitlines()]
        cap = cv2.VideoCapture(str(mp4)); ft = []
        for t in truth:
            good, img = cap.read(); ft.append((img, t))
        share, bad = agreement(ft)
        n = len(ft); k = round(share * n); tot += n; ok += k
        worst = min(worst, (share, f"{theme}/{layout} {k}/{n}"))
        print(theme, layout, f"{k}/{n}", bad[:10], flush=True)
print(f"total {ok}/{tot} = {ok/tot:.4%}; worst {worst}")
n_screens = int(sys.argv[1]) if len(sys.argv) > 1 else 300
res = evaluate(write_screens(d / "screens", n=n_screens, seed=10000))
print(f"phantom screens (real geometries) {res['right']}/{res['total']};",
      "wrong:", [(r["file"], r["reasons"]) for r in res["frames"] if not r["right"]][:10])
print(f"all phantom frames {ok + res['right']}/{tot + res['total']} = {(ok + res['right']) / (tot + res['total']):.4%}")
