"""Training hyper-parameters: the paper's recipe, and the same recipe scaled down for the tiny preset.

One dataclass so the paper preset is the same code with other numbers, and so a resumed run can
refuse to continue a folder that was started with different settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from rating_edge.errors import RatingEdgeError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 45            # backbone epochs (F, G and VS networks)
    head_epochs: int = 45       # epochs of the SH fusion MLP H on frozen F/G features
    lr: float = 3e-4            # Adam
    step_epochs: int = 15       # StepLR: multiply the learning rate by `gamma` every `step_epochs`
    gamma: float = 0.3
    batch: int = 64
    crop_min: float = 0.85      # random crop: side between crop_min*S and S, resized back to S
    jitter: float = 0.2         # colour jitter: brightness/contrast factors in [1-j, 1+j]
    jigsaw_epochs: int = 30     # jigsaw pre-training epochs per (fold, modality) when enabled
    # Jigsaw puzzle geometry as in Noroozi & Favaro, which the paper follows: 1,000 permutations, the ROI
    # resized to 225 px, 3x3 cells of 75 px, a 64 px tile cropped at a random place inside each cell.
    jigsaw_permutations: int = 1000
    jigsaw_size: int = 225      # side the ROI is resized to before it is cut into 3x3 cells
    jigsaw_tile: int = 64       # side of the tile cropped from each cell (at most jigsaw_size // 3)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_overrides(self, **kw) -> "TrainConfig":
        kw = {k: v for k, v in kw.items() if v is not None}
        cfg = replace(self, **kw)
        for k in ("epochs", "head_epochs", "step_epochs", "batch", "jigsaw_epochs", "jigsaw_permutations"):
            if int(getattr(cfg, k)) < 1:
                raise RatingEdgeError(f"training: {k} must be at least 1")
        if cfg.jigsaw_size < 3 * 4 or not (4 <= cfg.jigsaw_tile <= cfg.jigsaw_size // 3):
            raise RatingEdgeError(f"training: the jigsaw tile ({cfg.jigsaw_tile} px) must fit its cell "
                                  f"(jigsaw_size {cfg.jigsaw_size} // 3) and be at least 4 px")
        if cfg.batch < 2:
            raise RatingEdgeError("training: batch must be at least 2 (BatchNorm needs two samples)")
        if not (0.1 <= cfg.crop_min <= 1.0):
            raise RatingEdgeError("training: crop_min must lie in [0.1, 1]")
        if not (0.0 <= cfg.jitter < 1.0):
            raise RatingEdgeError("training: jitter must lie in [0, 1)")
        if cfg.lr <= 0:
            raise RatingEdgeError("training: lr must be positive")
        return cfg


# The paper's optimiser, schedule and batch. The tiny preset keeps Adam, x0.3 step decay and batch 64 but
# takes far fewer steps, so it uses a 10x learning rate and decays every 5 epochs; 8 epochs on 600 phantom
# pairs reach 0.945 combined accuracy on a separate phantom test set (docs/results.md). Its jigsaw task is
# scaled to its 64 px input: 30 permutations, cells of 21 px, 19 px tiles.
TRAIN_PRESETS = {
    "paper": TrainConfig(),
    "tiny": TrainConfig(epochs=8, head_epochs=30, lr=3e-3, step_epochs=5, jigsaw_epochs=5,
                        jigsaw_permutations=30, jigsaw_size=64, jigsaw_tile=19),
}


def train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]
    except KeyError:
        raise RatingEdgeError(f"unknown preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}") from None
