"""The paper's heatmaps: integrated gradients, smoothed over noisy copies, averaged over networks.

Too slow for the live path (50 steps x 8 copies x 10 networks of forward+backward passes), so it is
for off-line review (e.g. a frozen scanner image) and for judging the in-graph Grad-CAM maps.
Target: the log-odds z1 - z0 of each SH network of task "grade > 0" (the Grad-CAM target too).
Baseline: a black image. Attribution per pixel: sum over RGB of |attribution|; the mean map is scaled
to [0, 1] and values under the threshold (0.2) are zeroed, then drawn as a yellow overlay.
"""
from __future__ import annotations

import numpy as np
import torch

from rating_edge.errors import RatingEdgeError
from rating_edge.heatmap import HEAT_TASK
from rating_edge.spec import parse_network_id

YELLOW_RGB = np.array([255, 255, 0], np.float32)


def integrated_gradients(ref, gs: np.ndarray, doppler: np.ndarray, steps: int = 50, samples: int = 8,
                         noise: float = 0.15, threshold: float = 0.2, seed: int = 0, chunk: int = 25) -> dict:
    """One pair (uint8 RGB (S,S,3) each) -> {"gs", "doppler"}: (S, S) maps in [0, 1], < threshold zeroed.

    `noise`: standard deviation of the Gaussian added to each copy, as a fraction of the input's range.
    """
    if steps < 1 or samples < 1:
        raise RatingEdgeError("integrated gradients needs at least 1 step and 1 sample")
    x_gs, x_dop = ref.to_tensors(gs[None], doppler[None])
    zeros = np.zeros_like(gs[None])
    b_gs, b_dop = ref.to_tensors(zeros, zeros)
    gen = torch.Generator().manual_seed(seed)
    nets = [net for nid, net in ref.models.items()
            if parse_network_id(nid)[1] == "sh" and parse_network_id(nid)[2] == HEAT_TASK]
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint Riemann sum
    total = {"gs": torch.zeros_like(x_gs[0]), "doppler": torch.zeros_like(x_dop[0])}
    for _ in range(samples):
        n_gs = x_gs + noise * float(x_gs.max() - x_gs.min()) * torch.randn(x_gs.shape, generator=gen)
        n_dop = x_dop + noise * float(x_dop.max() - x_dop.min()) * torch.randn(x_dop.shape, generator=gen)
        for net in nets:
            grads = {"gs": torch.zeros_like(x_gs[0]), "doppler": torch.zeros_like(x_dop[0])}
            for lo in range(0, steps, chunk):
                a = alphas[lo:lo + chunk].view(-1, 1, 1, 1)
                p_gs = (b_gs + a * (n_gs - b_gs)).requires_grad_(True)
                p_dop = (b_dop + a * (n_dop - b_dop)).requires_grad_(True)
                with torch.enable_grad():
                    z = net(p_gs, p_dop)
                    g_gs, g_dop = torch.autograd.grad((z[:, 1] - z[:, 0]).sum(), [p_gs, p_dop])
                grads["gs"] += g_gs.sum(0)
                grads["doppler"] += g_dop.sum(0)
            total["gs"] += ((n_gs - b_gs)[0] * grads["gs"] / steps).abs()
            total["doppler"] += ((n_dop - b_dop)[0] * grads["doppler"] / steps).abs()
    out = {}
    for s, t in total.items():
        m = t.sum(0).numpy()  # (S, S), mean over copies and networks is a constant factor
        m = m / (m.max() + 1e-12)
        m[m < threshold] = 0.0
        out[s] = m.astype(np.float32)
    return out


def _captum_normalize(attr_hwc: np.ndarray) -> np.ndarray:
    """captum's _normalize_image_attr(attr, "positive", outlier_perc=1) as util/cnn_visual.py calls it:
    channel sum, negatives dropped, divided by the value under which 99 % of the mass lies, clipped."""
    from captum.attr._utils import visualization as viz

    if hasattr(viz, "_normalize_image_attr"):  # captum < 0.8
        return viz._normalize_image_attr(attr_hwc, "positive", outlier_perc=1)
    return viz._normalize_attr(np.sum(attr_hwc, axis=2), "positive", outlier_perc=1)


def official_heatmaps(ref, gs: np.ndarray, doppler: np.ndarray) -> dict:
    """The official code's heatmaps (util/cnn_visual.py, CaptumVisualizer): captum
    NoiseTunnel(IntegratedGradients) with nt_samples=8, nt_type="smoothgrad_sq", captum's default noise
    and steps, target = the network's predicted class (argmax), per SH network of task "> 0" on its two
    inputs, each map normalised as captum's "positive" visualisation with 1 % outliers. The official
    code saves one map per network; the paper shows their mean, which is returned here: {"gs",
    "doppler"} (S, S) in [0, 1]. Needs captum (`pip install 'rating-edge[explain]'`)."""
    try:
        from captum.attr import IntegratedGradients, NoiseTunnel
    except ImportError:
        raise RatingEdgeError("--method official needs captum: pip install 'rating-edge[explain]'") from None
    x_gs, x_dop = ref.to_tensors(gs[None], doppler[None])
    maps: dict = {"gs": [], "doppler": []}
    for nid, net in ref.models.items():
        _, module, task, _ = parse_network_id(nid)
        if module != "sh" or task != HEAT_TASK:
            continue
        with torch.no_grad():
            target = int(net(x_gs, x_dop).argmax(dim=1)[0])
        attrs = NoiseTunnel(IntegratedGradients(net)).attribute((x_gs, x_dop), target=target, nt_samples=8,
                                                                 nt_type="smoothgrad_sq")
        for s, a in zip(("gs", "doppler"), attrs):
            maps[s].append(_captum_normalize(a[0].detach().permute(1, 2, 0).numpy()))
    return {s: np.mean(v, axis=0).astype(np.float32) for s, v in maps.items()}


def overlay(image_rgb: np.ndarray, heat: np.ndarray, strength: float = 0.7) -> np.ndarray:
    """Yellow overlay whose opacity follows the map (zeroed pixels keep the image)."""
    a = (strength * heat)[..., None]
    return (image_rgb.astype(np.float32) * (1 - a) + YELLOW_RGB * a).round().clip(0, 255).astype(np.uint8)


def explain_pair(ckpt, gs_path, doppler_path, out_png, steps: int = 50, samples: int = 8, seed: int = 0,
                 roi_gs=None, roi_doppler=None, method: str = "ig", threshold: float = 0.2) -> dict:
    """Read a scanner GS/Doppler image pair, write a side-by-side PNG (GS | transformed Doppler).

    `method`: "ig" (this project's integrated gradients) or "official" (the authors' captum maps);
    the images go through the checkpoint's own preprocessing profile."""
    import cv2

    from rating_edge.dataset import read_image
    from rating_edge.export.exporter import checkpoint_preprocess
    from rating_edge.model.reference import load_ensemble
    from rating_edge.preprocess import prepare_pair

    if method not in ("ig", "official"):
        raise RatingEdgeError(f"unknown --method {method!r}; use ig or official")
    ref = load_ensemble(ckpt)
    params = checkpoint_preprocess(ref.manifest, ref.spec)
    gs, dop = prepare_pair(read_image(gs_path), read_image(doppler_path), roi_gs, roi_doppler, params)
    if method == "official":
        torch.manual_seed(seed)  # captum's noise comes from torch's global generator
        maps = official_heatmaps(ref, gs, dop)
        maps = {k: np.where(v < threshold, 0.0, v).astype(np.float32) for k, v in maps.items()}  # paper's figure
    else:
        maps = integrated_gradients(ref, gs, dop, steps, samples, seed=seed)
    panel = np.concatenate([overlay(gs, maps["gs"]), np.full((gs.shape[0], 4, 3), 255, np.uint8),
                            overlay(dop, maps["doppler"])], axis=1)
    if not cv2.imwrite(str(out_png), panel[:, :, ::-1]):
        raise RatingEdgeError(f"cannot write {out_png} (use a .png path in an existing folder)")
    return maps
