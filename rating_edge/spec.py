"""The shape of a RATING ensemble and the names of its networks (no torch: the runtime reads it too)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from rating_edge.errors import RatingEdgeError

MODULES = ("sh", "vs")
# Head variants. "mlp": SH H = Linear -> ReLU -> Linear, VS = torchvision's fc (this project's training).
# "linear2": SH and VS heads Linear(., hidden) -> Linear(hidden, 2) with no activation between them,
# as in the authors' published code (models/networks/GSDopplerFeatureFusion_net.py, build_heads).
HEADS = ("mlp", "linear2")


@dataclass(frozen=True)
class EnsembleSpec:
    """5 folds x {SH, VS} x 3 binary tasks (grade > t) x 2 seeds in the paper.

    `width` is ResNet-18's base channel count (64 in the paper); tests use tiny widths and inputs.
    """

    folds: int = 5
    tasks: int = 3
    seeds: int = 2
    width: int = 64
    input_size: int = 224
    hidden: int = 256
    head: str = "mlp"

    def __post_init__(self):
        if self.tasks != 3:
            raise RatingEdgeError("RATING's ECOC decoding needs exactly 3 binary tasks (grade > 0, > 1, > 2)")
        for k in ("folds", "seeds", "width", "input_size", "hidden"):
            if int(getattr(self, k)) < 1:
                raise RatingEdgeError(f"ensemble spec: {k} must be positive")
        if self.head not in HEADS:
            raise RatingEdgeError(f"ensemble spec: head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.input_size < 32:
            raise RatingEdgeError("ensemble spec: input_size must be at least 32 (ResNet-18 downsamples 32x)")

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    @property
    def heat_size(self) -> int:
        """Spatial size of layer4's output (the Grad-CAM resolution)."""
        s = self.input_size
        for _ in range(5):  # conv1 s2, maxpool s2, layer2..4 s2
            s = (s + 1) // 2
        return s

    def network_ids(self) -> list[str]:
        return [network_id(f, m, t, s) for f in range(self.folds) for m in MODULES
                for t in range(self.tasks) for s in range(self.seeds)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleSpec":
        known = {k: int(d[k]) for k in ("folds", "tasks", "seeds", "width", "input_size", "hidden") if k in d}
        if "head" in d:
            known["head"] = str(d["head"])
        return cls(**known)


PRESETS = {
    "paper": EnsembleSpec(),
    "tiny": EnsembleSpec(width=8, input_size=64, hidden=32),
}


def preset(name: str) -> EnsembleSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise RatingEdgeError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def network_id(fold: int, module: str, task: int, seed: int) -> str:
    """e.g. 'fold0-sh-gt1-seed0': fold 0, SH module, task 'grade > 1', training seed 0."""
    return f"fold{fold}-{module}-gt{task}-seed{seed}"


def parse_network_id(nid: str) -> tuple[int, str, int, int]:
    try:
        f, m, t, s = nid.split("-")
        if not (f.startswith("fold") and t.startswith("gt") and s.startswith("seed") and m in MODULES):
            raise ValueError
        return int(f[4:]), m, int(t[2:]), int(s[4:])
    except ValueError:
        raise RatingEdgeError(f"not a network id: {nid!r} (expected e.g. 'fold0-sh-gt1-seed0')") from None
