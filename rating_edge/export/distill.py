"""Distil the 60-network ensemble into the shared-backbone student and write it as a model package.

Why logits and not labels: the student must reproduce *the ensemble's* decisions (including its
mistakes), so its heads are fitted to each teacher network's log-odds d = z1 - z0 (the only part of the
two logits that the softmax sees), on unlabeled frames. The teacher runs once over the frames and its
log-odds are cached, which makes each epoch cost only the student's own forward/backward.

Resumption: everything needed to continue lives in `OUT_PKG/.distill/` (student and optimiser tensors
in safetensors, epoch counter, teacher log-odds, the hashes of teacher and data). A rerun with the same
teacher, frames and student shape continues after the last finished epoch and gives the same weights as
an uninterrupted run (per-epoch shuffles are derived from the seed and the epoch number).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import PreprocessParams, normalize

STATE_DIR = ".distill"
STATE_FILE = "state.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "student.safetensors"


# ------------------------------------------------------------------------------------------ frames

@dataclass
class Frames:
    """Preprocessed uint8 RGB pairs; `labels` (N, 3) [sh, vs, combined] or -1 where unknown."""

    gs: np.ndarray
    doppler: np.ndarray
    labels: np.ndarray
    source: dict

    def __len__(self) -> int:
        return int(self.gs.shape[0])

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for a in (self.gs, self.doppler):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def phantom_frames(n: int, params: PreprocessParams, seed: int = 0) -> Frames:
    """`n` fresh phantom pairs (grades drawn so every combined score is common, both Doppler kinds)."""
    from rating_edge.phantom.dataset import phantom_arrays

    gs, dop, labels = phantom_arrays(n, params, seed)
    return Frames(gs, dop, labels, {"kind": "phantom", "pairs": n, "seed": seed})


def load_frames(source: str, params: PreprocessParams, seed: int = 0) -> Frames:
    """`phantom:N` (N pairs drawn with `seed`), a labelled dataset folder, or a calibration set folder."""
    source = str(source)
    if source.startswith("phantom:"):
        try:
            n = int(source.split(":", 1)[1])
        except ValueError:
            raise RatingEdgeError(f"frames {source!r}: use phantom:N with N a number of pairs, e.g. phantom:2000") from None
        if n < 2:
            raise RatingEdgeError(f"frames {source!r}: need at least 2 pairs")
        return phantom_frames(n, params, seed)
    p = Path(source)
    if p.suffix == ".npz" and p.is_file():
        return npz_frames(p, params)
    if (p / "calib.json").is_file():
        from rating_edge.calibration.calibset import load_calib

        cs = load_calib(p, params, warn_small=False)
        return Frames(cs.gs, cs.doppler, cs.labels, {"kind": "calib", "path": str(p)})
    if (p / "labels.csv").is_file():
        from rating_edge.dataset import load_arrays

        gs, dop, labels, _ = load_arrays(p, params)
        return Frames(gs, dop, labels, {"kind": "dataset", "path": str(p)})
    raise RatingEdgeError(f"frames {source!r}: not phantom:N, a dataset folder (labels.csv), a calibration set "
                          "(calib.json) or an .npz of preprocessed pairs")


def npz_frames(path, params: PreprocessParams) -> Frames:
    """Preprocessed pairs saved with `save_frames` (uint8 RGB `gs`, `doppler`, optional `labels`)."""
    from rating_edge.preprocess import check_batch

    try:
        with np.load(path, allow_pickle=False) as z:
            gs, dop = z["gs"], z["doppler"]
            labels = z["labels"] if "labels" in z else np.full((len(gs), 3), -1, np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise RatingEdgeError(f"{path}: not an .npz of preprocessed pairs with arrays gs and doppler ({e})") from None
    check_batch(gs, params.input_size, f"{path}: gs")
    check_batch(dop, params.input_size, f"{path}: doppler")
    if len(gs) != len(dop) or labels.shape != (len(gs), 3):
        raise RatingEdgeError(f"{path}: gs, doppler and labels hold different numbers of pairs")
    return Frames(gs, dop, labels.astype(np.int64), {"kind": "npz", "path": str(path)})


def save_frames(path, frames: Frames) -> Path:
    """Keep prepared frames (e.g. a large phantom draw) so several distillations can reuse them."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, gs=frames.gs, doppler=frames.doppler, labels=frames.labels)
    return path


def _teacher_params(manifest: dict, spec) -> PreprocessParams:
    meta = manifest.get("meta", {}) or {}
    if isinstance(meta.get("preprocess"), dict):
        params = PreprocessParams.from_dict(meta["preprocess"])
        if params.input_size == spec.input_size:
            return params
    return PreprocessParams(input_size=spec.input_size)


# ------------------------------------------------------------------------------------ teacher

@torch.no_grad()
def teacher_logodds(models: dict, spec, frames: Frames, batch: int = 64, progress=None) -> dict:
    """Every teacher network's z1 - z0 on every frame: {"sh", "vs"} (N, folds, tasks, seeds) float32."""
    from rating_edge.spec import parse_network_id

    n = len(frames)
    out = {m: np.zeros((n, spec.folds, spec.tasks, spec.seeds), np.float32) for m in ("sh", "vs")}
    for i in range(0, n, batch):
        x_gs = torch.from_numpy(normalize(frames.gs[i:i + batch]))
        x_dop = torch.from_numpy(normalize(frames.doppler[i:i + batch]))
        for nid, net in models.items():
            f, m, t, s = parse_network_id(nid)
            z = net(x_gs, x_dop)
            out[m][i:i + batch, f, t, s] = (z[:, 1] - z[:, 0]).numpy()
        if progress is not None:
            progress(min(n, i + batch))
    return out


# ------------------------------------------------------------------------------------ agreement

def agreement(ref: dict, test: dict, labels: np.ndarray | None = None, thresholds=None) -> dict:
    """SH/VS/combined agreement and linear kappa of `test` against `ref` (probability dicts, compared
    by rating_edge.compare's definitions with the teacher's decision thresholds), plus accuracy of both
    against `labels` where known."""
    from rating_edge.compare import GRADE_KEYS, grade_report

    g = grade_report(ref, test, thresholds)
    out = {"pairs": g["pairs"], "nonfinite_pairs": g["nonfinite_pairs"]}
    for k in GRADE_KEYS:
        out[f"{k}_agreement"] = g[k]["agreement"]
        out[f"{k}_kappa"] = g[k]["kappa_linear"]
    if g["scores"] is None:
        return out
    r, t, ok = g["scores"]
    labels = None if labels is None else np.asarray(labels)[ok]
    if labels is not None:
        cols = {"sh": 0, "vs": 1, "combined": 2}
        known = labels[:, 2] >= 0
        if known.any():
            out["labelled_pairs"] = int(known.sum())
            for k, c in cols.items():
                out[f"teacher_{k}_accuracy"] = float(np.mean(r[k][known] == labels[known, c]))
                out[f"student_{k}_accuracy"] = float(np.mean(t[k][known] == labels[known, c]))
    return out


# ------------------------------------------------------------------------------------ state I/O

def _save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    from rating_edge.publish import publish

    with publish(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _optim_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _restore_optim(opt: torch.optim.Optimizer, tensors: dict) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _write_json(path: Path, data: dict) -> None:
    from rating_edge.publish import publish_json

    publish_json(path, data)


# ------------------------------------------------------------------------------------ training

@dataclass
class DistillConfig:
    share_depth: str = "layer4"
    branches: str = "module"
    epochs: int = 20
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    init: str = "teacher"  # "teacher" (trunks/branches/heads from teacher weights) or "random"
    loss: str = "mse"
    temperature: float = 2.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _lr_at(cfg: DistillConfig, epoch: int) -> float:
    """Cosine decay over the planned epochs (a pure function of the epoch, so resuming is exact)."""
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))


LOSSES = ("mse", "kd")


def distill_loss(sh_s, vs_s, sh_t, vs_t, kind: str = "mse", temperature: float = 2.0):
    """Loss over all 60 heads' log-odds.

    "mse": squared log-odds error; it spends most of its effort on confidently decided frames (a trained
    teacher's |z1 - z0| is often 5-15) whose decision cannot flip. "kd": binary cross-entropy against the
    teacher's softened probability sigmoid(d/T), times T^2 (Hinton's distillation loss); its gradient
    sigmoid(d_s/T) - sigmoid(d_t/T) concentrates on frames near a decision, which is what grade agreement
    depends on.
    """
    if kind == "mse":
        return 0.5 * (torch.mean((sh_s - sh_t) ** 2) + torch.mean((vs_s - vs_t) ** 2))
    if kind == "kd":
        import torch.nn.functional as F

        t = float(temperature)
        bce = [F.binary_cross_entropy_with_logits(s / t, torch.sigmoid(g / t)) for s, g in ((sh_s, sh_t), (vs_s, vs_t))]
        return 0.5 * t * t * (bce[0] + bce[1])
    raise RatingEdgeError(f"loss {kind!r} unknown; use one of {', '.join(LOSSES)}")


class Distiller:
    """One distillation run in `out` (the package folder), resumable through `out/.distill/`."""

    def __init__(self, ckpt, out, frames: Frames, cfg: DistillConfig, restart: bool = False, console=None):
        from rating_edge.export.student import build_student
        from rating_edge.model.checkpoint import checkpoint_hashes, load_models

        self.ckpt, self.out, self.frames, self.cfg = Path(ckpt), Path(out), frames, cfg
        self.console = console
        self.spec, self.teachers, self.manifest = load_models(ckpt)
        self.params = _teacher_params(self.manifest, self.spec)
        self.teacher_hash = checkpoint_hashes(ckpt)
        self.data_hash = frames.sha256
        if frames.gs.shape[1] != self.spec.input_size:
            raise RatingEdgeError(f"frames are {frames.gs.shape[1]}px; the teacher wants {self.spec.input_size}px")
        self.state_dir = self.out / STATE_DIR
        self.student = build_student(self.spec, cfg.share_depth, cfg.branches, cfg.seed,
                                     self.params.mean, self.params.std)
        if cfg.init == "teacher":
            self.student.init_from_teacher(self.teachers)
        elif cfg.init != "random":
            raise RatingEdgeError(f"init {cfg.init!r} unknown; use teacher or random")
        if cfg.loss not in LOSSES:
            raise RatingEdgeError(f"loss {cfg.loss!r} unknown; use one of {', '.join(LOSSES)}")
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epoch = 0
        self.history: list[dict] = []
        self.targets = None
        self._open(restart)

    def _identity(self) -> dict:
        c = self.cfg
        return {"teacher": self.teacher_hash["ensemble.json"], "data": self.data_hash, "share_depth": c.share_depth,
                "branches": c.branches, "batch": c.batch, "lr": c.lr, "weight_decay": c.weight_decay,
                "seed": c.seed, "init": c.init, "loss": c.loss, "temperature": c.temperature}

    def _open(self, restart: bool) -> None:
        sf = self.state_dir / STATE_FILE
        if restart and self.state_dir.exists():
            for p in self.state_dir.iterdir():
                p.unlink()
        if not sf.is_file():
            return
        from rating_edge.manifest import read_json, validate

        state = read_json(sf, "distillation state")
        validate(state, {"type": "object", "required": ["epoch"], "properties": {
            "epoch": {"type": "integer", "minimum": 0}, "identity": {"type": "object"},
            "history": {"type": "array"}}}, sf)
        mine = self._identity()
        diff = [k for k in mine if state.get("identity", {}).get(k) != mine[k]]
        if diff:
            raise RatingEdgeError(f"{self.out} holds an unfinished distillation with another {', '.join(diff)}; "
                                  "rerun with --restart to discard it, or choose another output folder")
        self.student.load_state_dict(_load_tensors(self.state_dir / WEIGHTS_FILE))
        _restore_optim(self.opt, _load_tensors(self.state_dir / "optim.safetensors"))
        self.epoch = int(state["epoch"])
        self.history = state.get("history", [])
        tf = self.state_dir / "teacher.safetensors"
        if tf.is_file():
            t = _load_tensors(tf)
            self.targets = {"sh": t["sh"].numpy(), "vs": t["vs"].numpy()}

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _save_tensors(self.state_dir / WEIGHTS_FILE, self.student.state_dict())
        _save_tensors(self.state_dir / "optim.safetensors", _optim_tensors(self.opt))
        _write_json(self.state_dir / STATE_FILE, {"identity": self._identity(), "epoch": self.epoch,
                                                  "history": self.history, "config": self.cfg.to_dict()})

    def teacher_targets(self, progress=None, cache_dir=None) -> dict:
        """The teacher's log-odds on the frames; `cache_dir` shares them between runs (e.g. share depths)
        keyed by the teacher's and the frames' hashes."""
        if self.targets is None:
            cached = None
            if cache_dir is not None:
                cached = Path(cache_dir) / f"{self.teacher_hash['ensemble.json'][:16]}-{self.data_hash[:16]}.safetensors"
            if cached is not None and cached.is_file():
                t = _load_tensors(cached)
                self.targets = {"sh": t["sh"].numpy(), "vs": t["vs"].numpy()}
            else:
                self.targets = teacher_logodds(self.teachers, self.spec, self.frames, progress=progress)
            tensors = {k: torch.from_numpy(v) for k, v in self.targets.items()}
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _save_tensors(self.state_dir / "teacher.safetensors", tensors)
            if cached is not None and not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                _save_tensors(cached, tensors)
        return self.targets

    def train_epoch(self, on_batch=None) -> float:
        """One epoch over the frames in a seed- and epoch-determined order; checkpointed at its end."""
        cfg, st = self.cfg, self.student
        tg = self.teacher_targets()
        n = len(self.frames)
        order = np.random.default_rng([cfg.seed, self.epoch]).permutation(n)
        for grp in self.opt.param_groups:
            grp["lr"] = _lr_at(cfg, self.epoch)
        torch.manual_seed(cfg.seed * 100003 + self.epoch)
        st.train()
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch):
            idx = np.sort(order[start:start + cfg.batch])
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            x_gs = torch.from_numpy(normalize(self.frames.gs[idx]))
            x_dop = torch.from_numpy(normalize(self.frames.doppler[idx]))
            sh, vs = st.forward_logits(x_gs, x_dop)
            loss = distill_loss(sh, vs, torch.from_numpy(tg["sh"][idx]), torch.from_numpy(tg["vs"][idx]),
                                cfg.loss, cfg.temperature)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            value = loss.item()
            total += value * len(idx)
            count += len(idx)
            if on_batch is not None:
                on_batch(len(idx), value)
        st.eval()
        self.epoch += 1
        self.history.append({"epoch": self.epoch, "loss": total / max(count, 1)})
        self._save()
        return self.history[-1]["loss"]

    @torch.no_grad()
    def student_probs(self, gs: np.ndarray, dop: np.ndarray, batch: int = 64) -> dict:
        self.student.eval()
        outs = [self.student(torch.from_numpy(gs[i:i + batch]), torch.from_numpy(dop[i:i + batch]))
                for i in range(0, len(gs), batch)]
        return {"sh_prob": torch.cat([o[0] for o in outs]).numpy(), "vs_prob": torch.cat([o[1] for o in outs]).numpy()}

    def write_package(self, holdout: dict | None = None) -> Path:
        """model.onnx (fused, package I/O), the student's weights, and model.json with provenance."""
        from rating_edge.export.student_onnx import export_student_onnx
        from rating_edge.package import write_model_json

        self.out.mkdir(parents=True, exist_ok=True)
        export_student_onnx(self.student, self.out / ONNX_FILE)
        _save_tensors(self.out / WEIGHTS_FILE, self.student.state_dict())
        s = self.spec.input_size
        image = {"dtype": "uint8", "layout": "NHWC", "color": "RGB", "shape": ["batch", s, s, 3]}
        fusion = {"strategy": "distill", "share_depth": self.cfg.share_depth, "branches": self.cfg.branches,
                  "student": self.student.cfg.to_dict(), "weights": WEIGHTS_FILE,
                  "teacher": self.teacher_hash, "data": {"sha256": self.data_hash, "pairs": len(self.frames),
                                                         "source": self.frames.source},
                  "training": {**self.cfg.to_dict(), "epochs_done": self.epoch, "history": self.history}}
        if holdout is not None:
            fusion["holdout"] = holdout
        meta = {"spec": self.spec.to_dict(), "preprocess": self.params.to_dict(),
                "inputs": {"gs": image, "doppler": dict(image)},
                "heat_size": [self.spec.heat_size, self.spec.heat_size],
                "fusion": fusion, "precision": "fp32", "batch": "dynamic",
                "graphs": [{"file": ONNX_FILE, "kind": "fused"}],
                "source": {"checkpoint": self.teacher_hash, "checkpoint_path": str(self.ckpt)}}
        if self.manifest.get("thresholds"):  # the heads imitate the teachers' probabilities: same decisions
            meta["thresholds"] = self.manifest["thresholds"]
        return write_model_json(self.out, meta, [WEIGHTS_FILE])
