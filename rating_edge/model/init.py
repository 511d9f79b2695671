"""Randomly initialised ensembles in the checkpoint layout, for benchmarks and tests.

A freshly initialised ResNet-18 in eval mode has meaningless BatchNorm statistics, so its logits
explode and every probability is 0 or 1, which would make exactness tests blind. We re-estimate the
BN statistics on a few noise images and scale the last layer so probabilities spread around 0.5.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from rating_edge.model.checkpoint import save_ensemble
from rating_edge.model.networks import SHNet, VSNet, build_network, last_linear
from rating_edge.spec import MODULES, EnsembleSpec, network_id


def _noise(spec: EnsembleSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    """Normalised uniform uint8 noise: what the networks see from random test images."""
    from rating_edge.preprocess import normalize

    img = torch.randint(0, 256, (n, spec.input_size, spec.input_size, 3), generator=gen, dtype=torch.uint8)
    return torch.from_numpy(normalize(img.numpy()))


@torch.no_grad()
def _calibrate_bn(net: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
            m.weight.uniform_(0.7, 1.3, generator=gen)
            m.bias.normal_(0.0, 0.1, generator=gen)
    net.train()
    net.feature_map(x)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1


@torch.no_grad()
def _scale_last(linear: nn.Linear, feats: torch.Tensor, target_std: float = 1.0) -> None:
    logits = feats @ linear.weight.t() + linear.bias
    diff = logits[:, 1] - logits[:, 0]
    s = float(diff.std()) if diff.numel() > 1 else 1.0
    if s > 1e-6:
        linear.weight.mul_(target_std / s)
    linear.bias.zero_()


def random_backbone(spec: EnsembleSpec, x: torch.Tensor, gen: torch.Generator):
    from rating_edge.model.resnet import ResNet18

    b = ResNet18(2, spec.width)
    _calibrate_bn(b, x, gen)
    with torch.no_grad():
        _scale_last(b.fc, b.features(x))
    return b


@torch.no_grad()
def init_ensemble(spec: EnsembleSpec, seed: int = 0, share_backbones: bool = False) -> dict:
    """{network id: module}. With `share_backbones`, the 6 networks of a (fold, module) reuse one F,
    one G (SH) or one backbone (VS): identical weights stored 6 times, for the exporter's dedup."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = _noise(spec, 16, gen)
    models = {}
    for fold in range(spec.folds):
        for module in MODULES:
            shared = {}
            for task in range(spec.tasks):
                for s in range(spec.seeds):
                    nid = network_id(fold, module, task, s)
                    net = build_network(nid, spec)
                    if module == "sh":
                        assert isinstance(net, SHNet)
                        for name in ("F", "G"):
                            if share_backbones and name in shared:
                                b = copy.deepcopy(shared[name])
                            else:
                                b = random_backbone(spec, x, gen)
                                if spec.head == "linear2":  # official-style backbones carry no fc
                                    del b.fc
                                shared[name] = b
                            setattr(net, name, b)
                        feats = torch.cat([net.F.features(x), net.G.features(x)], 1)
                        _scale_last(last_linear(net.H), net.H[:-1](feats))
                    else:
                        assert isinstance(net, VSNet)
                        if share_backbones and "B" in shared:
                            src = shared["B"]
                        else:
                            src = random_backbone(spec, x, gen)
                            shared["B"] = src
                        if spec.head == "linear2":  # src's fc is one Linear: copy the backbone only
                            state = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
                            net.load_state_dict({**net.state_dict(), **state})
                            for lin in net.fc:
                                nn.init.normal_(lin.weight, 0, 0.05, generator=gen)
                            _scale_last(last_linear(net.fc), net.fc[:-1](net.features(x)))
                        else:
                            net.load_state_dict(src.state_dict())
                        if share_backbones and spec.head != "linear2":  # heads differ even where the backbone is shared
                            nn.init.normal_(net.fc.weight, 0, 0.01, generator=gen)
                            _scale_last(net.fc, net.features(x))
                    models[nid] = net.eval()
    return models


def write_random_ensemble(out, spec: EnsembleSpec, seed: int = 0, share_backbones: bool = False):
    from rating_edge.threads import torch_threads, torch_threads_set

    with torch_threads_set(torch_threads(spec.width)):
        models = init_ensemble(spec, seed, share_backbones)
    return save_ensemble(out, spec, models, meta={"origin": "random", "seed": seed,
                                                  "share_backbones": share_backbones})
