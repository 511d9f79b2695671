"""Synthetic longitudinal dorsal finger-joint (MCP/PIP) ultrasound with known EOSS grades.

Why a phantom: no patient data exists here, yet training, calibration, export checks and the runtime
need images whose grades are known exactly. The image is built the way a B-mode image forms:
a reflectivity map of the anatomy (skin, subcutis, extensor tendon, two bone surfaces with the joint
gap and acoustic shadow, synovial hypertrophy) is turned into speckle by blurring complex scatterers
with a point-spread function (envelope = Rayleigh speckle), attenuated with depth, partly compensated
by TGC and log-compressed. Every grade cue is geometric and large enough to survive an ROI crop
resized to 64 px:

- SH 0: no hypoechoic region (the recess holds echogenic fat); 1: a small hypoechoic pool whose surface
  stays below the line joining the two bone tops; 2: above that line with a flat or concave surface;
  3: a convex bulge above the line that lifts the tendon.
- VS 0: no signal; 1: one to three separate single spots; 2: confluent signal in under half of the
  synovium; 3: in more than half.

The Doppler image is the GS image plus colour only where `signal_mask` is set; every other pixel is
gray (R = G = B) and the Doppler box outline is gray too, so `rating_edge.preprocess.doppler_mask`
recovers exactly the painted signal. Colour maps keep chroma >= 70 and saturation >= 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError

DOPPLER_KINDS = ("cdus", "pdus")
BASE_H, BASE_W = 256, 320

# Ranges of the grade cues, in base pixels (a 256 x 320 image); tests read them too.
SH1_DEPTH_FRACTION = (0.14, 0.4)    # surface depth below the bone-top line / recess depth
SH2_HEIGHT = (8.0, 15.0)            # surface height above the bone-top line at the edges
SH3_HEIGHT = (20.0, 32.0)           # bulge height above the bone-top line at its top
VS1_SPOT_RADIUS = (2.5, 3.3)
VS2_COVERAGE = (0.22, 0.42)         # fraction of the synovium with signal
VS3_COVERAGE = (0.6, 0.9)


@dataclass(frozen=True)
class Anatomy:
    """One patient's joint, in base pixels; `jitter` makes the next scan of the same joint."""

    skin_y: float = 10.0
    tendon_top: float = 48.0
    tendon_thick: float = 20.0
    bone_top: float = 120.0       # depth of the left bone top
    top_offset: float = 0.0       # right bone top minus left bone top
    gap_x: float = 160.0          # joint gap centre
    gap_half: float = 18.0
    recess_depth: float = 34.0    # gap floor below the bone-top line
    head_width: float = 32.0      # left bone top to gap edge (metacarpal head)
    base_width: float = 14.0      # gap edge to right bone top (phalanx base lip)
    tendon_sag: float = 4.0
    subcut_level: float = 0.35
    tendon_level: float = 0.9
    fat_level: float = 0.5
    septa: int = 3

    def jitter(self, rng: np.random.Generator) -> "Anatomy":
        """Same joint, new probe placement: small shifts in position and depth, same shapes."""
        dx = rng.uniform(-18, 18)
        dy = rng.uniform(-6, 6)
        return replace(self, skin_y=float(np.clip(self.skin_y + rng.uniform(-2, 2), 4, 18)),
                       tendon_top=self.tendon_top + dy, bone_top=self.bone_top + dy,
                       gap_x=self.gap_x + dx, tendon_thick=self.tendon_thick * rng.uniform(0.93, 1.07),
                       recess_depth=self.recess_depth * rng.uniform(0.95, 1.05))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    skin = rng.uniform(6, 14)
    tendon_top = rng.uniform(38, 52)
    thick = rng.uniform(15, 22)
    bone_top = tendon_top + thick + rng.uniform(38, 46)
    return Anatomy(skin_y=skin, tendon_top=tendon_top, tendon_thick=thick, bone_top=bone_top,
                   top_offset=rng.uniform(-6, 6), gap_x=rng.uniform(150, 172), gap_half=rng.uniform(5, 9),
                   recess_depth=rng.uniform(22, 30), head_width=rng.uniform(34, 48), base_width=rng.uniform(14, 24),
                   tendon_sag=rng.uniform(0, 5), subcut_level=rng.uniform(0.22, 0.32),
                   tendon_level=rng.uniform(1.0, 1.3), fat_level=rng.uniform(0.45, 0.6), septa=int(rng.integers(1, 5)))


@dataclass
class PhantomPair:
    gs: np.ndarray                 # BGR uint8, R = G = B
    doppler: np.ndarray            # BGR uint8: gs + colour inside the Doppler box + gray box outline
    roi: tuple                     # (x, y, w, h), the same in both images
    doppler_box: tuple             # (x, y, w, h)
    synovium_mask: np.ndarray      # bool
    signal_mask: np.ndarray        # bool, exactly the coloured pixels of `doppler`
    sh: int
    vs: int
    combined: int
    kind: str                      # cdus | pdus
    landmarks: dict = field(default_factory=dict)  # bone tops, line, gray level: for tests and overlays


def sample_grades(rng: np.random.Generator) -> tuple[int, int]:
    """(sh, vs) with every grade represented and SH = 0 => VS = 0.

    Draws the combined score roughly uniformly (so a trainer sees every class), then a consistent pair.
    """
    combined = int(rng.integers(0, 4))
    if combined == 0:
        return 0, 0
    # pairs with max(sh, vs) == combined and sh > 0 (VS needs synovium)
    options = [(s, v) for s in range(1, 4) for v in range(0, 4) if max(s, v) == combined]
    weights = np.array([1.0 + (s == v) + (v == 0) * 0.5 for s, v in options])
    k = rng.choice(len(options), p=weights / weights.sum())
    return options[k]


# ----------------------------------------------------------------------------------------------------
def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise RatingEdgeError(f"phantom size must be (H, W), got {size!r}") from None
    if h < 96 or w < 96 or h > 4096 or w > 4096:
        raise RatingEdgeError(f"phantom size {h}x{w} (HxW) must lie between 96 and 4096 pixels per side")
    return h, w


def _smooth_noise(rng, shape, sx, sy=None):
    """Zero-mean, unit-std smooth random field (coarse axes drawn at low resolution, then upsampled)."""
    sy = sx if sy is None else sy
    H, W = shape
    fx, fy = max(1, int(sx / 2)), max(1, int(sy / 2))
    h = H if fy == 1 else -(-H // fy) + 2
    w = W if fx == 1 else -(-W // fx) + 2
    n = rng.standard_normal((h, w), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=max(sx / fx, 0.3), sigmaY=max(sy / fy, 0.3))
    if fx > 1 or fy > 1:
        n = cv2.resize(n, (w * fx, h * fy), interpolation=cv2.INTER_LINEAR)
        n = n[(fy if fy > 1 else 0):, (fx if fx > 1 else 0):][:H, :W]
    s = float(n.std())
    return n / s if s > 0 else n


def _geometry(an: Anatomy, sh: int, rng, H: int, W: int):
    """Curves (per column, in image pixels) of the anatomy and the synovium for one grade."""
    ky, kx = H / BASE_H, W / BASE_W
    x = (np.arange(W, dtype=np.float32) + 0.5) / kx          # base-unit x of each column
    gl, gr = an.gap_x - an.gap_half, an.gap_x + an.gap_half
    xtl, xtr = gl - an.head_width, gr + an.base_width
    topl, topr = an.bone_top, an.bone_top + an.top_offset
    floor = (topl + topr) / 2 + an.recess_depth
    line = topl + (topr - topl) * (x - xtl) / (xtr - xtl)  # bone-top line

    # left bone: metacarpal head (a dome falling into the joint gap), neck and shaft to the left
    dl = floor - topl
    tl = np.clip((x - xtl) / (gl - xtl), 0, 1)
    bone_l = np.where(x >= xtl, topl + dl * tl ** 1.35,
                      topl + 9 * (1 - np.exp(-((xtl - x) / 28.0) ** 2)) + 0.03 * np.maximum(0, xtl - 60 - x))
    # right bone: phalanx base lip rising from the gap, then a gently sloping shaft
    dr = floor - topr
    tr = np.clip((xtr - x) / (xtr - gr), 0, 1)
    bone_r = np.where(x <= xtr, topr + dr * tr ** 1.15, topr + 0.05 * (x - xtr))
    gap_floor = np.full_like(x, floor)
    in_l, in_r = x < gl, x > gr
    bone = np.where(in_l, bone_l, np.where(in_r, bone_r, gap_floor))
    has_bone = in_l | in_r

    # synovium surface, in base units of height above the bone-top line (nan = none)
    surf = np.full(W, np.nan, np.float32)
    depth = floor - (topl + topr) / 2
    if sh == 1:
        f = rng.uniform(*SH1_DEPTH_FRACTION)
        meniscus = rng.uniform(0, 2.0)
        uu = np.clip((x - (xtl + xtr) / 2) / (xtr - xtl) * 2, -1, 1)
        surf = -(f * depth) - meniscus * (1 - uu ** 2)
        surf = np.where((x > xtl) & (x < xtr), surf, np.nan)
    elif sh == 2:
        h = rng.uniform(*SH2_HEIGHT)
        sag = rng.uniform(0, min(5.0, h - 4))          # concave (middle lower) or flat
        ext = rng.uniform(6, 16)
        xa, xb = xtl - ext, xtr + ext * 0.6
        xm, hw = (xa + xb) / 2, (xb - xa) / 2
        uu = (x - xm) / hw
        surf = h - sag * (1 - np.clip(uu, -1, 1) ** 2)
        # close onto the bone over the last few pixels at both ends
        taper = np.clip((np.abs(uu) - 0.85) / 0.15, 0, 1)
        surf = surf - taper * (h + 30)
        surf = np.where(np.abs(uu) <= 1, surf, np.nan)
    elif sh == 3:
        h = rng.uniform(*SH3_HEIGHT)
        ext = rng.uniform(14, 28)
        xa, xb = xtl - ext, xtr + ext * 0.7
        xm, hw = (xa + xb) / 2 - rng.uniform(0, 6), (xb - xa) / 2
        uu = (x - xm) / hw
        p = rng.uniform(0.6, 1.0)
        surf = h * np.clip(1 - uu ** 2, 0, None) ** p - 6 * (np.abs(uu) > 0.9) * (np.abs(uu) - 0.9) / 0.1
        surf = np.where(np.abs(uu) <= 1, surf, np.nan)
    syn_top = line - surf                                  # base-unit y of the synovium surface

    # tendon: sags a little into the joint, is lifted by a bulge
    uu = np.clip((x - an.gap_x) / 60.0, -1, 1)
    t_top = an.tendon_top + an.tendon_sag * (1 - uu ** 2)
    t_bot = t_top + an.tendon_thick
    hard = np.where(np.isnan(syn_top), 0, np.minimum(0, syn_top - 5 - t_bot))   # keep 5 px above the bulge
    shift = cv2.GaussianBlur(hard.reshape(1, -1).astype(np.float32), (0, 0), sigmaX=10 * kx).ravel()
    shift = np.minimum(shift, hard)
    t_top, t_bot = t_top + shift, t_bot + shift

    return dict(ky=ky, kx=kx, x=x, bone=bone, has_bone=has_bone, line=line, syn_top=syn_top, t_top=t_top,
                t_bot=t_bot, xtl=xtl, xtr=xtr, topl=topl, topr=topr, floor=floor, gl=gl, gr=gr)


def _speckle(rng, amp, ky, kx):
    """Complex scatterers of amplitude `amp` blurred by an anisotropic PSF -> Rayleigh envelope."""
    H, W = amp.shape
    z1 = rng.standard_normal((H, W), dtype=np.float32) * amp
    z2 = rng.standard_normal((H, W), dtype=np.float32) * amp
    sx, sy = 1.2 * kx, 0.7 * ky
    z1 = cv2.GaussianBlur(z1, (0, 0), sigmaX=sx, sigmaY=sy)
    z2 = cv2.GaussianBlur(z2, (0, 0), sigmaX=sx, sigmaY=sy)
    return np.sqrt(z1 * z1 + z2 * z2)


def _render_gs(rng, an: Anatomy, g: dict, H: int, W: int):
    ky, kx = g["ky"], g["kx"]
    yy = ((np.arange(H, dtype=np.float32) + 0.5) / ky)[:, None]   # base-unit depth of each row
    ones = np.ones((1, W), np.float32)
    bone, t_top, t_bot, syn_top = g["bone"][None], g["t_top"][None], g["t_bot"][None], g["syn_top"][None]

    # reflectivity map
    lobules = 1 + 0.35 * _smooth_noise(rng, (H, W), 6 * kx, 4 * ky)
    refl = np.full((H, W), an.subcut_level, np.float32) * lobules
    refl[(yy < an.skin_y) * ones > 0] = 0.015                                # gel
    refl = refl + (0.9 * np.exp(-yy / 1.2)).astype(np.float32)                # transducer ring-down
    skin = (np.abs(yy - an.skin_y - 1.0) < 1.3) * ones
    dermis = ((yy >= an.skin_y + 2.3) & (yy < an.skin_y + 7)) * ones
    refl = np.where(dermis > 0, refl * 1.6, refl)
    refl = np.where(skin > 0, rng.uniform(1.0, 1.5), refl)
    for _ in range(an.septa):                                                # fibrous septa in the fat
        y0 = rng.uniform(an.skin_y + 10, an.tendon_top - 4)
        slope = rng.uniform(-0.12, 0.12)
        yl = y0 + slope * (g["x"] - rng.uniform(0, BASE_W))
        sep = (np.abs(yy - yl[None]) < 0.7) & (rng.random((1, W)) < 0.9)
        refl = np.where(sep, refl * 2.2, refl)
    tendon = (yy >= t_top) & (yy < t_bot)
    fib = np.clip(0.85 + 0.35 * _smooth_noise(rng, (H, W), 14 * kx, 0.6 * ky), 0.15, 1.6)
    refl = np.where(tendon, an.tendon_level * fib, refl)
    # paratenon: thin bright borders of the tendon
    refl = np.where((np.abs(yy - t_top) < 0.8) | (np.abs(yy - t_bot) < 0.8), an.tendon_level * 1.5, refl)
    # periarticular fat / capsule between tendon and bone
    periart = (yy >= t_bot + 1) & (yy < bone)
    refl = np.where(periart, an.fat_level * (1 + 0.25 * _smooth_noise(rng, (H, W), 3 * kx, 2 * ky)), refl)
    # hyaline cartilage: thin anechoic cap on the metacarpal head
    cart = (yy >= bone - 1.6) & (yy < bone) & (g["x"][None] > g["xtl"] - 25) & (g["x"][None] < g["gl"]) \
        & (g["has_bone"][None])
    refl = np.where(cart, 0.03, refl)
    # synovial hypertrophy: hypoechoic
    syn = np.isfinite(syn_top) & (yy >= np.nan_to_num(syn_top, nan=1e9)) & (yy < bone) & (yy > t_bot)
    refl = np.where(syn, rng.uniform(0.05, 0.09) * (1 + 0.3 * _smooth_noise(rng, (H, W), 2 * kx, 2 * ky)), refl)
    # joint capsule: a thin echogenic line over the distended synovium
    cap = (np.abs(yy - np.nan_to_num(syn_top, nan=-1e9)) < 0.9) & (yy < bone - 1) & (yy > t_bot)
    refl = np.where(cap, an.fat_level * 1.8, refl)
    # below the bone surface: acoustic shadow; below the gap: deeper joint structures
    below = yy >= bone
    shadow = below & g["has_bone"][None]
    refl = np.where(below, 0.3 * np.exp(-(yy - bone) / 40.0), refl)
    refl = np.where(shadow, 0.012, refl)
    refl = np.clip(refl, 0.005, None)

    env = _speckle(rng, refl, ky, kx)
    # specular lines (no speckle): skin and bone cortex, with a faint reverberation under the bone
    d_bone = yy - bone
    bright = rng.uniform(2.0, 2.8) * (1 + 0.15 * _smooth_noise(rng, (1, W), 10 * kx))
    cortex = np.exp(-0.5 * (d_bone / 0.8) ** 2) * g["has_bone"][None] * bright
    reverb = np.exp(-0.5 * ((d_bone - rng.uniform(5, 8)) / 1.0) ** 2) * g["has_bone"][None] * 0.05
    env = env + (cortex + reverb).astype(np.float32)

    # depth attenuation, partly compensated by TGC; electronic noise floor
    att = rng.uniform(0.5, 1.1)
    tgc = rng.uniform(0.35, 0.7)
    env = env * np.exp(-att * (1 - tgc) * yy / BASE_H * 2.2).astype(np.float32)
    floor_noise = _speckle(rng, np.full((H, W), rng.uniform(0.035, 0.055), np.float32), ky, kx)
    env = np.sqrt(env * env + floor_noise * floor_noise)

    # log compression with random gain / dynamic range; subcutis reference -> mid gray
    db = 20 * np.log10(env + 1e-6)
    ref_rows = slice(int((an.skin_y + 9) * ky), max(int((an.skin_y + 9) * ky) + 2, int((an.tendon_top - 4) * ky)))
    ref = float(np.median(db[ref_rows]))
    dr = rng.uniform(48, 58)
    level = rng.uniform(82, 108)
    gray = level + (db - ref) * (255.0 / dr)
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    synovium = syn & (yy < bone)
    return gray, synovium


def _roi(an: Anatomy, g: dict, H: int, W: int):
    """The joint: both bone tops with a margin, from above the tendon to below the joint gap."""
    ky, kx = g["ky"], g["kx"]
    cx = (g["xtl"] + g["xtr"]) / 2
    top = an.tendon_top - 10
    w, h = 168 * kx, 120 * ky
    x0 = int(round(np.clip(cx * kx - w / 2, 1, W - 1 - w)))
    y0 = int(round(np.clip(top * ky, 1, H - 1 - h)))
    return (x0, y0, int(round(w)), int(round(h)))


def _remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    if not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[lab]


def _signal(rng, synovium: np.ndarray, vs: int, ky: float, kx: float) -> np.ndarray:
    """Where Doppler colour goes, following the VS grade bands."""
    H, W = synovium.shape
    sig = np.zeros((H, W), bool)
    area = int(synovium.sum())
    if vs == 0 or area == 0:
        return sig
    k = (kx + ky) / 2
    if vs == 1:
        n_spots = int(rng.integers(1, 4))
        r = rng.uniform(*VS1_SPOT_RADIUS) * k
        er = cv2.erode(synovium.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * int(np.ceil(r)) + 3,) * 2)).astype(bool)
        cand = np.argwhere(er)
        if len(cand) == 0:  # tiny synovium: one spot at its deepest interior point
            dist = cv2.distanceTransform(synovium.astype(np.uint8), cv2.DIST_L2, 3)
            cand = np.argwhere(dist >= dist.max() - 1e-3)
            r = max(1.6, min(r, float(dist.max())))
        centres = []
        for _ in range(200):
            if len(centres) == n_spots:
                break
            cy, cx = cand[rng.integers(len(cand))]
            if all((cy - a) ** 2 + (cx - b) ** 2 > (2 * r + 5 * k) ** 2 for a, b in centres):
                centres.append((cy, cx))
        for cy, cx in centres:
            rr = r * rng.uniform(0.85, 1.15)
            cv2.ellipse(sig.view(np.uint8), (int(cx), int(cy)), (max(1, int(round(rr * 1.25))), max(1, int(round(rr)))),
                        float(rng.uniform(-30, 30)), 0, 360, 1, -1)
        return sig & synovium
    lo, hi = VS2_COVERAGE if vs == 2 else VS3_COVERAGE
    target = rng.uniform(lo, hi)
    # confluent: a smooth field biased toward one or two seed points, thresholded at the target quantile
    ys, xs = np.nonzero(synovium)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # vessel-like texture: ridges (zero crossings) of a smooth field form a branching network
    ridge = 1 - np.minimum(np.abs(_smooth_noise(rng, (H, W), 3.5 * k)), 2) / 2
    field = 0.5 * ridge + 0.3 * _smooth_noise(rng, (H, W), 8 * k)
    for _ in range(1 if vs == 2 else 2):
        j = rng.integers(len(ys))
        s = np.sqrt(area / np.pi) * (0.8 if vs == 2 else 1.4)
        field += np.exp(-((yy - ys[j]) ** 2 + (xx - xs[j]) ** 2) / (2 * s * s))
    vals = field[synovium]
    band_hi = 0.49 if vs == 2 else 0.97
    big = min(2 * spot_area(k), 0.4 * area)   # a confluent region is clearly larger than any single spot
    sig = synovium
    for _ in range(16):
        sig = synovium & (field >= np.quantile(vals, 1 - target))
        sig = _keep_confluent(sig, max(8, int(12 * k * k)), 0.5 if vs == 2 else 0.2)
        cov = sig.sum() / area
        largest = _components_max(sig)
        if lo <= cov <= band_hi and largest >= big:
            break
        step = (0.5 * (lo + hi) - cov) * 0.8 if not lo <= cov <= band_hi else 0.04
        target = float(np.clip(target + step, 0.02, 0.99))
    return sig


def spot_area(k: float = 1.0) -> float:
    """Upper bound of one VS-1 spot's area in pixels at scale k (image size / 256x320)."""
    r = VS1_SPOT_RADIUS[1] * 1.15 * k
    return float(np.pi * (1.25 * r + 1) * (r + 1))


def _components_max(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max())


def _keep_confluent(mask: np.ndarray, min_area: int, rel: float) -> np.ndarray:
    """Drop fragments: keep components of at least `min_area` and `rel` times the largest one."""
    if not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    keep = (areas >= min_area) & (areas >= rel * areas.max())
    return keep[lab]


def _colourise(rng, gray: np.ndarray, sig: np.ndarray, kind: str, ky: float, kx: float) -> np.ndarray:
    """Paint Doppler colour; every painted pixel keeps chroma >= 70 and saturation >= 0.5."""
    out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if not sig.any():
        return out
    k = (kx + ky) / 2
    dist = cv2.distanceTransform(sig.astype(np.uint8), cv2.DIST_L2, 3)
    core = 1 - np.exp(-dist / (2.0 * k))                                 # faster / stronger inside vessels
    mod = np.clip(0.75 + 0.25 * _smooth_noise(rng, sig.shape, 4 * k), 0.3, 1.0)
    m = np.clip(core * mod, 0, 1)[sig]
    if kind == "cdus":
        direction = _smooth_noise(rng, sig.shape, 6 * k)[sig] + rng.uniform(-0.5, 0.5)
        main = 140 + 115 * m                 # red (toward the probe) or blue (away)
        sub = 0.5 * main * m * m             # aliasing tint toward yellow / cyan at high velocity
        b = np.where(direction < 0, main, 0)
        r = np.where(direction < 0, 0, main)
        gch = sub
    elif kind == "pdus":
        r = 150 + 105 * m                    # dark red -> orange -> yellow-orange with power
        gch = 0.5 * r * m ** 1.5
        b = np.zeros_like(r)
    else:
        raise RatingEdgeError(f"unknown Doppler kind {kind!r}; use one of {DOPPLER_KINDS}")
    col = np.stack([b, gch, r], axis=1)
    out[sig] = np.clip(np.round(col), 0, 255).astype(np.uint8)
    return out


def make_pair(rng: np.random.Generator, sh: int, vs: int, doppler_kind: str = "cdus", size=(BASE_H, BASE_W),
              anatomy: Anatomy | None = None) -> PhantomPair:
    """One GS + Doppler pair of the same section with grades (sh, vs).

    `anatomy` fixes the patient's joint (use `sample_anatomy(rng).jitter(rng)` for repeat scans);
    None draws a new one. Geometry scales with `size` (H, W); the grade cues keep their proportions.
    """
    sh, vs = int(sh), int(vs)
    if not (0 <= sh <= 3 and 0 <= vs <= 3):
        raise RatingEdgeError(f"grades must lie in 0-3, got sh={sh}, vs={vs}")
    if sh == 0 and vs > 0:
        raise RatingEdgeError("EOSS: SH = 0 implies VS = 0 (no synovium, no synovial vascularity)")
    if doppler_kind not in DOPPLER_KINDS:
        raise RatingEdgeError(f"unknown Doppler kind {doppler_kind!r}; use one of {DOPPLER_KINDS}")
    H, W = _check_size(size)
    an = anatomy if anatomy is not None else sample_anatomy(rng)
    g = _geometry(an, sh, rng, H, W)
    gray, synovium = _render_gs(rng, an, g, H, W)
    roi = _roi(an, g, H, W)
    x0, y0, rw, rh = roi
    inner = np.zeros((H, W), bool)
    inner[y0 + 3:y0 + rh - 3, x0 + 3:x0 + rw - 3] = True
    synovium &= inner
    if sh > 0 and not synovium.any():
        raise RatingEdgeError(f"phantom size {H}x{W} is too small to show SH grade {sh}")
    ky, kx = g["ky"], g["kx"]
    sig = _signal(rng, synovium, vs, ky, kx)
    sig = _remove_small(sig, 6)
    if vs > 0 and not sig.any():
        raise RatingEdgeError(f"phantom size {H}x{W} is too small to show VS grade {vs}")

    gs = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    dop = _colourise(rng, gray, sig, doppler_kind, ky, kx)
    # Doppler box: the ROI plus a margin, outlined in gray (never colour: it is not flow)
    mx, my = int(rng.uniform(8, 20) * kx), int(rng.uniform(6, 14) * ky)
    bx0, by0 = max(1, x0 - mx), max(1, y0 - my)
    bx1, by1 = min(W - 2, x0 + rw + mx), min(H - 2, y0 + rh + my)
    box = (bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1)
    shade = int(rng.integers(170, 215))
    cv2.rectangle(dop, (bx0, by0), (bx1, by1), (shade, shade, shade), 1)
    landmarks = dict(bone_tops=[(float(g["xtl"] * kx), float(g["topl"] * ky)),
                                (float(g["xtr"] * kx), float(g["topr"] * ky))],
                     gap_x=float(an.gap_x * kx), floor_y=float(g["floor"] * ky),
                     tendon_bottom=(g["t_bot"] * ky).astype(np.float32))
    return PhantomPair(gs=gs, doppler=dop, roi=roi, doppler_box=box, synovium_mask=synovium, signal_mask=sig,
                       sh=sh, vs=vs, combined=max(sh, vs), kind=doppler_kind, landmarks=landmarks)


def bone_top_line_y(pair: PhantomPair, xs) -> np.ndarray:
    """Image-row of the line joining the two bone tops at columns `xs` (the SH 1/2 boundary)."""
    (x1, y1), (x2, y2) = pair.landmarks["bone_tops"]
    xs = np.asarray(xs, np.float32) + 0.5
    return y1 + (y2 - y1) * (xs - x1) / (x2 - x1)
