"""Where calibration pairs come from: the phantom, a labelled dataset, or a scanner video source.

Every path ends in the one preprocessing implementation (`prepare_gs` / `prepare_doppler`), so the
INT8 scales are measured on exactly what the engine is fed. No torch.
"""
from __future__ import annotations

import numpy as np

from rating_edge.calibration.calibset import balanced_order, doppler_fraction
from rating_edge.errors import CalibrationError
from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs

# Valid EOSS (SH, VS) combinations: SH = 0 forces VS = 0.
GRADE_COMBOS = [(0, 0)] + [(s, v) for s in range(1, 4) for v in range(4)]


def _roi_pair(roi):
    """Phantom ROIs: one box for both images, or a (gs, doppler) pair / dict of boxes."""
    if roi is None:
        return None, None
    if isinstance(roi, dict):
        return roi.get("gs"), roi.get("doppler")
    if len(roi) == 2 and not np.isscalar(roi[0]):
        return roi[0], roi[1]
    return roi, roi


def collect_phantom(n: int, params: PreprocessParams, seed: int = 0):
    """`n` phantom pairs cycling through every valid grade combination and both Doppler kinds."""
    try:
        from rating_edge.phantom.joint import make_pair
    except ImportError as e:
        raise CalibrationError(f"the phantom is not available in this build ({e})") from None
    if n < 1:
        raise CalibrationError("--phantom needs a positive number of pairs")
    rng = np.random.default_rng(seed)
    gs, dop, labels = [], [], []
    for i in range(n):
        sh, vs = GRADE_COMBOS[i % len(GRADE_COMBOS)]
        kind = ("cdus", "pdus")[(i // len(GRADE_COMBOS)) % 2]
        pair = make_pair(rng, sh, vs, kind)
        roi_gs, roi_dop = _roi_pair(getattr(pair, "roi", None))
        gs.append(prepare_gs(pair.gs, roi_gs, params))
        dop.append(prepare_doppler(pair.doppler, roi_dop, params))
        labels.append((sh, vs, max(sh, vs)))
    source = {"kind": "phantom", "pairs": n, "seed": seed}
    return np.stack(gs), np.stack(dop), np.asarray(labels, np.int64), source


def collect_dataset(data_dir, params: PreprocessParams, max_pairs: int | None = None, seed: int = 0):
    """Pairs of a labelled dataset; with `max_pairs`, a subset spread over grades and Doppler content."""
    from rating_edge.dataset import load_arrays, read_labels

    records = read_labels(data_dir)
    gs, dop, labels, records = load_arrays(data_dir, params, records)
    if max_pairs is not None and len(records) > max_pairs:
        keep = np.sort(balanced_order(labels, doppler_fraction(dop, params.profile), seed)[:max_pairs])
        gs, dop, labels = gs[keep], dop[keep], labels[keep]
    source = {"kind": "dataset", "path": str(data_dir), "pairs_available": len(records)}
    return gs, dop, labels, source


def collect_source(spec: str, params: PreprocessParams, max_pairs: int = 1000, seed: int = 0,
                   per_section: int = 40, max_frames: int = 100_000, profile=None):
    """Pairs from a scanner video source through the runtime's own capture, layout detection and pairing.

    The same `LayoutDetector` and `Pairer` as `rating-edge run` decide what a pair is, so calibration
    sees exactly the crops the engine will see. Consecutive pairs of one section are near-duplicates,
    so at most `per_section` are kept per section (spread over it), then the set is balanced over
    Doppler content. Phantom sources carry their true grades; other sources are unlabelled.
    """
    from rating_edge.runtime.capture import open_source
    from rating_edge.runtime.layout import LayoutDetector, Profile
    from rating_edge.runtime.pairing import Pairer

    profile = profile or Profile()
    src = open_source(spec).open()
    detector = LayoutDetector(profile, params.doppler)
    pairer = Pairer(roi=profile.roi, doppler_params=params.doppler)
    by_section: dict[int, list] = {}
    frames = misses = 0
    try:
        while frames < max_frames:
            img, meta = src.read()
            if img is None:
                misses += 1
                if src.live and not (meta or {}).get("end") and misses < 300:
                    continue
                break
            misses = 0
            t = frames / (src.fps or 30.0)
            pair, _ = pairer.update(frames, t, img, detector.detect(img))
            frames += 1
            if pair is None:
                continue
            grades = ((meta or {}).get("truth") or {}).get("grades")
            lab = (grades["sh"], grades["vs"], grades["combined"]) if grades else (-1, -1, -1)
            by_section.setdefault(pair.section, []).append((pair, lab))
    finally:
        src.close()
    chosen = []
    for items in by_section.values():
        step = max(1, len(items) // per_section)
        chosen.extend(items[::step][:per_section])
    if not chosen:
        raise CalibrationError(f"source {spec!r}: no GS/Doppler pairs found in {frames} frames (the runtime could "
                               "not pair any Doppler frame with a GS frame of the same section)")
    gs = np.stack([prepare_gs(p.gs_bgr, p.roi_gs, params) for p, _ in chosen])
    dop = np.stack([prepare_doppler(p.doppler_bgr, p.roi_doppler, params) for p, _ in chosen])
    labels = np.asarray([lab for _, lab in chosen], np.int64)
    if len(chosen) > max_pairs:
        keep = np.sort(balanced_order(labels, doppler_fraction(dop, params.profile), seed)[:max_pairs])
        gs, dop, labels = gs[keep], dop[keep], labels[keep]
    source = {"kind": "video", "source": str(spec), "frames": frames, "sections": len(by_section),
              "pairs_found": sum(len(v) for v in by_section.values())}
    return gs, dop, labels, source
