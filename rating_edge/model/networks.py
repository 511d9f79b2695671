"""The two RATING network types (docs/design/model.md) and a factory keyed by network id."""
from __future__ import annotations

import torch
from torch import nn

from rating_edge.model.resnet import ResNet18
from rating_edge.spec import EnsembleSpec, parse_network_id


class SHNet(nn.Module):
    """GS-Doppler feature fusion: F(GS) ++ G(transformed Doppler) -> MLP H -> 2 logits.

    F and G keep their own fc layers: the paper trains them first as single-modality classifiers,
    then trains H on the frozen 512-d features. Only the features reach H.
    """

    def __init__(self, width: int = 64, hidden: int = 256):
        super().__init__()
        self.F = ResNet18(2, width)
        self.G = ResNet18(2, width)
        d = self.F.feature_dim
        self.H = nn.Sequential(nn.Linear(2 * d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))

    def forward(self, gs: torch.Tensor, doppler: torch.Tensor) -> torch.Tensor:
        return self.H(torch.cat([self.F.features(gs), self.G.features(doppler)], dim=1))


class VSNet(ResNet18):
    """Vascularity: one ResNet-18 on the transformed Doppler image.

    A ResNet18 subclass so its state_dict keys are plain torchvision keys; it takes (gs, doppler)
    like SHNet so every network is called the same way, and ignores gs.
    """

    def __init__(self, width: int = 64):
        super().__init__(2, width)

    def forward(self, gs: torch.Tensor, doppler: torch.Tensor) -> torch.Tensor:
        return super().forward(doppler)


def build_network(nid: str, spec: EnsembleSpec) -> nn.Module:
    _, module, _, _ = parse_network_id(nid)
    if module == "sh":
        return SHNet(spec.width, spec.hidden)
    return VSNet(spec.width)
