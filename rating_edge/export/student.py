"""The shared-backbone student that the `distill` strategy trains to imitate the 60-network ensemble.

Why this shape: the exact ensemble runs up to 90 ResNet-18s per pair; the student runs one trunk per
input stream (GS, transformed Doppler) up to `share_depth` and then only a few branches, so its cost is
about 2-4 ResNet-18s whatever the number of teacher networks.

- `share_depth` names the first ResNet stage that is *not* shared: "layer2" shares the stem and layer1,
  "layer3" shares through layer2, "layer4" shares through layer3, "all" shares the whole backbone (the
  heads read the trunks directly).
- `branches` sets who owns the unshared stages. "module" (default): three branches, SH-on-GS,
  SH-on-Doppler and VS-on-Doppler, because the SH and VS networks learn different things from the
  Doppler image while the 30 networks of one module mostly agree; this keeps the cost at 2 trunks + 3
  branches. "fold": one branch set per fold (15 branches), closer to the teacher's per-fold diversity
  but about 3x the branch cost, which at 224 px loses the >= 20x target for shallow share depths.
- 60 heads, one per teacher network, stored batched so they run as a handful of MatMuls: SH heads are
  the teacher's H (Linear(16w, hidden), ReLU, Linear(hidden, 2)) on [GS features, Doppler features];
  VS heads are the teacher's fc (Linear(8w, 2)) on Doppler features. With the authors' "linear2" head
  (no activation) the SH heads skip the ReLU and each VS head is the teacher's two Linear layers
  multiplied into one (exactly the same map).

`forward_logits` gives each head's log-odds d = z1 - z0 (what training matches); `forward` takes the
engine inputs (uint8 RGB NHWC), normalises inside the graph and returns the four package outputs,
including Grad-CAM of the SH task-0 heads computed with forward operations only (see `_gradcam`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rating_edge.errors import RatingEdgeError
from rating_edge.heatmap import HEAT_EPS, HEAT_TASK
from rating_edge.model.resnet import ResNet18, init_weights
from rating_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD
from rating_edge.spec import EnsembleSpec, network_id

SHARE_DEPTHS = ("layer2", "layer3", "layer4", "all")
BRANCHES = ("module", "fold")
STAGES = ("layer1", "layer2", "layer3", "layer4")
# Branch roles: (module, stream). SH reads both streams, VS reads Doppler only.
ROLES = (("sh", "gs"), ("sh", "doppler"), ("vs", "doppler"))


@dataclass(frozen=True)
class StudentConfig:
    spec: EnsembleSpec
    share_depth: str = "layer4"
    branches: str = "module"

    def __post_init__(self):
        if self.share_depth not in SHARE_DEPTHS:
            raise RatingEdgeError(f"share depth {self.share_depth!r} unknown; choose one of {', '.join(SHARE_DEPTHS)}")
        if self.branches not in BRANCHES:
            raise RatingEdgeError(f"branches {self.branches!r} unknown; choose one of {', '.join(BRANCHES)}")

    @property
    def shared_stages(self) -> tuple:
        if self.share_depth == "all":
            return STAGES
        return STAGES[:STAGES.index(self.share_depth)]

    @property
    def branch_stages(self) -> tuple:
        return STAGES[len(self.shared_stages):]

    @property
    def groups(self) -> int:
        """Branch sets per role: 1 for "module", `folds` for "fold" (nothing to branch at "all")."""
        if self.share_depth == "all" or self.branches == "module":
            return 1
        return self.spec.folds

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "share_depth": self.share_depth, "branches": self.branches}

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        return cls(EnsembleSpec.from_dict(d["spec"]), d.get("share_depth", "layer4"), d.get("branches", "module"))


def _stage_channels(width: int, stage: str) -> tuple[int, int, int]:
    i = STAGES.index(stage)
    out = width * (2 ** i)
    inp = width if i == 0 else out // 2
    return inp, out, 1 if i == 0 else 2


class Trunk(nn.Module):
    """The stem and the shared stages of one stream, with torchvision key names (conv1, bn1, layerN)."""

    def __init__(self, width: int, stages: tuple):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stages = list(stages)
        for s in stages:
            setattr(self, s, ResNet18._layer(*_stage_channels(width, s)))
        init_weights(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in self.stages:
            x = getattr(self, s)(x)
        return x


class Branch(nn.Module):
    """The unshared stages after the trunk (empty at share depth "all")."""

    def __init__(self, width: int, stages: tuple):
        super().__init__()
        self.stages = list(stages)
        for s in stages:
            setattr(self, s, ResNet18._layer(*_stage_channels(width, s)))
        init_weights(self)

    def forward(self, x):
        for s in self.stages:
            x = getattr(self, s)(x)
        return x


class Student(nn.Module):
    """Two trunks, a few branches and 60 batched heads (see the module docstring for why)."""

    def __init__(self, cfg: StudentConfig, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.cfg = cfg
        sp = cfg.spec
        w, d = sp.width, sp.feature_dim
        g = cfg.groups
        self.trunk_gs = Trunk(w, cfg.shared_stages)
        self.trunk_doppler = Trunk(w, cfg.shared_stages)
        self.branches = nn.ModuleDict()
        if cfg.branch_stages:
            for module, stream in ROLES:
                self.branches[f"{module}_{stream}"] = nn.ModuleList(Branch(w, cfg.branch_stages) for _ in range(g))
        k = sp.folds * sp.tasks * sp.seeds // g  # heads per group and module
        self.k = k
        h = sp.hidden
        # SH heads: W1 as (G, 2d, K*hidden) so all K first layers of a group are one MatMul.
        self.sh_w1 = nn.Parameter(torch.empty(g, 2 * d, k * h))
        self.sh_b1 = nn.Parameter(torch.zeros(g, 1, k * h))
        self.sh_w2 = nn.Parameter(torch.empty(g, k, h, 2))
        self.sh_b2 = nn.Parameter(torch.zeros(g, k, 1, 2))
        self.vs_w = nn.Parameter(torch.empty(g, d, k * 2))
        self.vs_b = nn.Parameter(torch.zeros(g, 1, k * 2))
        with torch.no_grad():
            bound1 = (1.0 / (2 * d)) ** 0.5
            self.sh_w1.uniform_(-bound1, bound1)
            self.sh_w2.uniform_(-(1.0 / h) ** 0.5, (1.0 / h) ** 0.5)
            self.vs_w.uniform_(-(1.0 / d) ** 0.5, (1.0 / d) ** 0.5)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # --- head order: group g, then K heads ordered (fold within group, task, seed) -------------------
    def head_ids(self, module: str) -> list[list[str]]:
        """Teacher network id of every head, as [group][k]."""
        sp, g = self.cfg.spec, self.cfg.groups
        ids = [network_id(f, module, t, s) for f in range(sp.folds) for t in range(sp.tasks) for s in range(sp.seeds)]
        return [ids[i * self.k:(i + 1) * self.k] for i in range(g)]

    def _maps(self, x_gs, x_dop):
        """Layer4 activations each role's heads read: {role: (B, G, C, h, w)}."""
        t_gs, t_dop = self.trunk_gs(x_gs), self.trunk_doppler(x_dop)
        if not self.cfg.branch_stages:
            a_gs, a_dop = t_gs.unsqueeze(1), t_dop.unsqueeze(1)
            return {"sh_gs": a_gs, "sh_doppler": a_dop, "vs_doppler": a_dop}
        src = {"gs": t_gs, "doppler": t_dop}
        return {f"{m}_{s}": torch.stack([br(src[s]) for br in self.branches[f"{m}_{s}"]], 1) for m, s in ROLES}

    def _heads(self, maps):
        sp = self.cfg.spec
        b = maps["sh_gs"].shape[0]
        g, k, h = self.cfg.groups, self.k, sp.hidden
        f_gs = maps["sh_gs"].mean(dim=(3, 4))  # (B, G, d)
        f_dop = maps["sh_doppler"].mean(dim=(3, 4))
        f_vs = maps["vs_doppler"].mean(dim=(3, 4))
        sh_in = torch.cat([f_gs, f_dop], dim=2).unsqueeze(2)  # (B, G, 1, 2d)
        pre = torch.matmul(sh_in, self.sh_w1) + self.sh_b1  # (B, G, 1, K*h)
        hid = (pre if sp.head == "linear2" else torch.relu(pre)).reshape(b, g, k, 1, h)
        sh_logits = (torch.matmul(hid, self.sh_w2) + self.sh_b2).reshape(b, g, k, 2)
        vs_logits = (torch.matmul(f_vs.unsqueeze(2), self.vs_w) + self.vs_b).reshape(b, g, k, 2)
        return sh_logits, vs_logits, pre

    def _to_grid(self, d):
        """(B, G, K) head-ordered values -> (B, folds, tasks, seeds)."""
        sp = self.cfg.spec
        return d.reshape(d.shape[0], sp.folds, sp.tasks, sp.seeds)

    def normalize(self, img_u8):
        """uint8 RGB NHWC -> float NCHW, ImageNet-normalised, the same arithmetic as preprocess.normalize."""
        x = img_u8.to(torch.float32) * (1.0 / 255.0)
        x = x.permute(0, 3, 1, 2)
        return (x - self.mean) / self.std

    def forward_logits(self, x_gs, x_dop):
        """Normalised float NCHW inputs -> (sh_d, vs_d) log-odds z1 - z0, each (B, folds, tasks, seeds)."""
        sh, vs, _ = self._heads(self._maps(x_gs, x_dop))
        return self._to_grid(sh[..., 1] - sh[..., 0]), self._to_grid(vs[..., 1] - vs[..., 0])

    def _gradcam(self, maps, pre):
        """Grad-CAM of the SH task-0 heads without autograd.

        For head k, z1 - z0 = w2d . ReLU(W1 [avg(A_gs); avg(A_dop)] + b1) + b2d, so dz/dA[c, i, j] is
        the same at every position: (W1^T (w2d * [pre > 0]))_c / (h w). alpha is its spatial mean, i.e.
        exactly that value, and cam = ReLU(sum_c alpha_c A_c), averaged over heads, then normalised per
        image (rating_edge.heatmap's convention).
        """
        sp = self.cfg.spec
        g, k, h = self.cfg.groups, self.k, sp.hidden
        d = sp.feature_dim
        b = pre.shape[0]
        per_fold = k // (sp.tasks * sp.seeds)  # folds per group
        # select task-0 heads: within a group heads are (fold, task, seed)
        sel = [f * sp.tasks * sp.seeds + HEAT_TASK * sp.seeds + s for f in range(per_fold) for s in range(sp.seeds)]
        idx = torch.tensor(sel, dtype=torch.long)
        w2d = (self.sh_w2[..., 1] - self.sh_w2[..., 0]).index_select(1, idx)  # (G, K0, h)
        w1 = self.sh_w1.reshape(g, 2 * d, k, h).index_select(2, idx)  # (G, 2d, K0, h)
        w1 = w1.permute(0, 2, 3, 1)  # (G, K0, h, 2d)
        active = pre.reshape(b, g, k, h).index_select(2, idx)  # (B, G, K0, h)
        # a linear2 head has no ReLU: every hidden unit passes its gradient
        active = torch.ones_like(active) if sp.head == "linear2" else (active > 0).to(pre.dtype)
        gate = (active * w2d.unsqueeze(0)).unsqueeze(3)  # (B, G, K0, 1, h)
        grad = torch.matmul(gate, w1.unsqueeze(0)).squeeze(3)  # (B, G, K0, 2d)
        heats = []
        for part, a in ((slice(0, d), maps["sh_gs"]), (slice(d, 2 * d), maps["sh_doppler"])):
            hh, ww = a.shape[3], a.shape[4]
            alpha = grad[..., part] * (1.0 / (hh * ww))  # (B, G, K0, d)
            cam = torch.relu(torch.matmul(alpha, a.reshape(b, g, d, hh * ww)))  # (B, G, K0, hw)
            avg = cam.mean(dim=(1, 2)).reshape(b, hh, ww)
            m = avg.reshape(b, hh * ww).max(dim=1).values.reshape(b, 1, 1)
            heats.append(avg / (m + HEAT_EPS))
        return heats

    def forward(self, gs, doppler):
        """Engine inputs (uint8 RGB NHWC) -> sh_prob, vs_prob (B, folds, 3, seeds), heat_gs, heat_doppler."""
        maps = self._maps(self.normalize(gs), self.normalize(doppler))
        sh, vs, pre = self._heads(maps)
        sh_prob = torch.sigmoid(self._to_grid(sh[..., 1] - sh[..., 0]))
        vs_prob = torch.sigmoid(self._to_grid(vs[..., 1] - vs[..., 0]))
        heat_gs, heat_dop = self._gradcam(maps, pre)
        return sh_prob, vs_prob, heat_gs, heat_dop

    # --- initialisation from the teacher -------------------------------------------------------------
    @torch.no_grad()
    def init_from_teacher(self, teachers: dict) -> None:
        """Start from the teacher's own weights: trunks and branches from fold-matched teacher backbones,
        every head from its teacher network's head.

        Heads then start in the basis of one backbone per role, so distillation mostly re-fits heads
        and fine-tunes features instead of learning 60 heads from scratch; with teachers that share
        backbones per module (init-ensemble --share-backbones) the student starts exact.
        """
        sp = self.cfg.spec
        src = {  # role -> teacher backbone of fold f
            "sh_gs": lambda f: teachers[network_id(f, "sh", 0, 0)].F,
            "sh_doppler": lambda f: teachers[network_id(f, "sh", 0, 0)].G,
            "vs_doppler": lambda f: teachers[network_id(f, "vs", 0, 0)],
        }
        _copy_prefix(self.trunk_gs, src["sh_gs"](0).state_dict())
        _copy_prefix(self.trunk_doppler, src["sh_doppler"](0).state_dict())
        for role, brs in self.branches.items():
            per = sp.folds // len(brs)
            for i, br in enumerate(brs):
                _copy_prefix(br, src[role](i * per).state_dict())
        h = sp.hidden
        for gi, ids in enumerate(self.head_ids("sh")):
            for ki, nid in enumerate(ids):
                H = teachers[nid].H
                self.sh_w1[gi, :, ki * h:(ki + 1) * h] = H[0].weight.t()
                self.sh_b1[gi, 0, ki * h:(ki + 1) * h] = H[0].bias
                self.sh_w2[gi, ki] = H[-1].weight.t()
                self.sh_b2[gi, ki, 0] = H[-1].bias
        for gi, ids in enumerate(self.head_ids("vs")):
            for ki, nid in enumerate(ids):
                fc = teachers[nid].fc
                if isinstance(fc, nn.Sequential):  # linear2: Linear -> Linear is one linear map
                    w = (fc[1].weight.double() @ fc[0].weight.double()).float()
                    bias = (fc[1].weight.double() @ fc[0].bias.double() + fc[1].bias.double()).float()
                else:
                    w, bias = fc.weight, fc.bias
                self.vs_w[gi, :, ki * 2:(ki + 1) * 2] = w.t()
                self.vs_b[gi, 0, ki * 2:(ki + 1) * 2] = bias


def _copy_prefix(dst: nn.Module, state: dict) -> None:
    """Load the entries of a torchvision-keyed state dict that `dst` has (a trunk or branch subset)."""
    own = dst.state_dict()
    dst.load_state_dict({k: state[k] for k in own}, strict=True)


def build_student(spec: EnsembleSpec, share_depth: str = "layer4", branches: str = "module", seed: int = 0,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Student:
    torch.manual_seed(seed)
    return Student(StudentConfig(spec, share_depth, branches), mean, std)
