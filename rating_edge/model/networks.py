"""The two RATING network types (docs/design/model.md) and a factory keyed by network id."""
from __future__ import annotations

import torch
from torch import nn

from rating_edge.model.resnet import ResNet18
from rating_edge.spec import EnsembleSpec, parse_network_id


def make_head(in_dim: int, hidden: int, head: str) -> nn.Sequential:
    """"mlp": Linear -> ReLU -> Linear (keys 0.*, 2.*); "linear2": Linear -> Linear without an
    activation (keys 0.*, 1.*), the authors' published head."""
    if head == "linear2":
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.Linear(hidden, 2))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))


def last_linear(head: nn.Sequential) -> nn.Linear:
    return head[-1]


class SHNet(nn.Module):
    """GS-Doppler feature fusion: F(GS) ++ G(transformed Doppler) -> head H -> 2 logits.

    With the "mlp" head, F and G keep their own fc layers: the paper trains them first as
    single-modality classifiers, then trains H on the frozen 512-d features. The official checkpoints
    ("linear2") carry no backbone fc, so neither do F and G there. Only the features reach H.
    """

    def __init__(self, width: int = 64, hidden: int = 256, head: str = "mlp"):
        super().__init__()
        fc = None if head == "linear2" else 2
        self.F = ResNet18(fc, width)
        self.G = ResNet18(fc, width)
        d = self.F.feature_dim
        self.H = make_head(2 * d, hidden, head)

    def forward(self, gs: torch.Tensor, doppler: torch.Tensor) -> torch.Tensor:
        return self.H(torch.cat([self.F.features(gs), self.G.features(doppler)], dim=1))


class VSNet(ResNet18):
    """Vascularity: one ResNet-18 on the transformed Doppler image.

    A ResNet18 subclass so its state_dict keys are plain torchvision keys; it takes (gs, doppler)
    like SHNet so every network is called the same way, and ignores gs. With the "linear2" head,
    `fc` is Linear(512, hidden) -> Linear(hidden, 2) (keys fc.0.*, fc.1.*).
    """

    def __init__(self, width: int = 64, head: str = "mlp", hidden: int = 256):
        super().__init__(2, width)
        if head == "linear2":
            self.fc = make_head(self.feature_dim, hidden, head)
            for m in self.fc:
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, gs: torch.Tensor, doppler: torch.Tensor) -> torch.Tensor:
        return super().forward(doppler)


def build_network(nid: str, spec: EnsembleSpec) -> nn.Module:
    _, module, _, _ = parse_network_id(nid)
    if module == "sh":
        return SHNet(spec.width, spec.hidden, spec.head)
    return VSNet(spec.width, spec.head, spec.hidden)
