"""ResNet-18 with torchvision's exact state_dict keys, so torchvision-trained checkpoints load unchanged.

Written out (timm/torchvision style) instead of importing torchvision: PyPI's torchvision does not
match the CPU torch build used here, and the export needs only this one architecture.
"""
from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation (Kaiming fan-out convs, unit BatchNorm), for every ResNet-shaped net."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18 layout; `width` = base channels (64 in torchvision).

    `num_classes=None` leaves out `fc`: a feature extractor, like the official code's backbones.
    """

    def __init__(self, num_classes: int | None = 2, width: int = 64):
        super().__init__()
        self.width = width
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(w, w, 1)
        self.layer2 = self._layer(w, 2 * w, 2)
        self.layer3 = self._layer(2 * w, 4 * w, 2)
        self.layer4 = self._layer(4 * w, 8 * w, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if num_classes is not None:
            self.fc = nn.Linear(8 * w, num_classes)
        init_weights(self)

    @staticmethod
    def _layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1))

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Output of layer4 (the last conv block: Grad-CAM's activations)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet18(num_classes: int = 2, width: int = 64) -> ResNet18:
    return ResNet18(num_classes=num_classes, width=width)
