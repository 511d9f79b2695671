"""Autograd Grad-CAM of the eager reference: the ground truth the in-graph heatmaps are checked against.

Follows rating_edge.heatmap: per SH network of task 0, alpha = spatial mean of d(z1 - z0)/dA on
layer4's output A of F (GS) and G (Doppler), cam = ReLU(sum_k alpha_k A_k), mean over those networks,
divided by the per-image maximum (+1e-8).
"""
from __future__ import annotations

import numpy as np
import torch

from rating_edge.heatmap import HEAT_TASK, normalize_heat
from rating_edge.spec import parse_network_id


def _cam(a: torch.Tensor, grad: torch.Tensor) -> np.ndarray:
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * a).sum(dim=1)).detach().numpy()


def gradcam_reference(ref, gs: np.ndarray, doppler: np.ndarray) -> dict:
    """{"heat_gs", "heat_doppler"}: (B, h, w) from a ReferenceEnsemble (rating_edge.model.load_ensemble)."""
    x_gs, x_dop = ref.to_tensors(gs, doppler)
    cams = {"gs": [], "doppler": []}
    for nid, net in ref.models.items():
        _, module, task, _ = parse_network_id(nid)
        if module != "sh" or task != HEAT_TASK:
            continue
        with torch.enable_grad():
            a_f = net.F.feature_map(x_gs).detach().requires_grad_(True)
            a_g = net.G.feature_map(x_dop).detach().requires_grad_(True)
            feats = torch.cat([torch.flatten(net.F.avgpool(a_f), 1), torch.flatten(net.G.avgpool(a_g), 1)], 1)
            z = net.H(feats)
            g_f, g_g = torch.autograd.grad((z[:, 1] - z[:, 0]).sum(), [a_f, a_g])
        cams["gs"].append(_cam(a_f, g_f))
        cams["doppler"].append(_cam(a_g, g_g))
    return {f"heat_{s}": normalize_heat(np.mean(cams[s], axis=0).astype(np.float32)) for s in cams}
