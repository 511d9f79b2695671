"""The paper's training recipe for the whole 60-network ensemble, resumable network by network.

For fold k (patients of the other folds only), per module (SH, VS), per binary task t (grade > t) and
per training seed:
  SH: F = ResNet-18 on GS and G = ResNet-18 on the transformed Doppler are first trained as
      single-modality binary classifiers (each with its own fc), then the MLP H is trained on their
      frozen, concatenated features.
  VS: one ResNet-18 on the transformed Doppler image.
Optionally every backbone starts from a jigsaw-pretrained backbone of its modality (per fold).

Each finished network is written at once (atomic safetensors) and recorded with its SHA-256 in
`train_state.json`; a restart skips recorded networks whose files still match and retrains the rest,
so an interrupted run loses at most the network in progress.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rating_edge.dataset import load_arrays
from rating_edge.errors import RatingEdgeError
from rating_edge.model.checkpoint import MANIFEST, save_network, write_manifest
from rating_edge.model.networks import SHNet, VSNet
from rating_edge.model.resnet import ResNet18
from rating_edge.package import sha256_file
from rating_edge.preprocess import PreprocessParams
from rating_edge.spec import EnsembleSpec, parse_network_id
from rating_edge.threads import torch_threads
from rating_edge.train.config import TrainConfig
from rating_edge.train.folds import fold_of_records, patient_folds, split_summary
from rating_edge.train.loop import extract_features, fit, image_batches

STATE = "train_state.json"


@dataclass
class TrainResult:
    out: Path
    trained: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    complete: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0


def _seed_for(cfg_seed: int, fold: int, module: str, task: int, seed: int, stage: str = "") -> int:
    """A stable per-network seed: a resumed run trains each network exactly as an uninterrupted one."""
    h = hashlib.sha256(f"{cfg_seed}/{fold}/{module}/{task}/{seed}/{stage}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _rng_and_torch(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _held_out_auc(y: np.ndarray, p: np.ndarray):
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p))


class _Trainer:
    def __init__(self, data_dir, out, spec: EnsembleSpec, cfg: TrainConfig, jigsaw: bool, preset_name: str,
                 progress, log):
        self.out = Path(out)
        self.spec, self.cfg, self.jigsaw = spec, cfg, jigsaw
        self.params = PreprocessParams(input_size=spec.input_size)
        self.gs, self.dop, self.labels, self.records = load_arrays(data_dir, self.params)
        self.fold_of_patient = patient_folds(self.records, spec.folds, cfg.seed)
        self.fold = fold_of_records(self.records, self.fold_of_patient)
        self.progress, self.log = progress, log
        self.fingerprint = {
            "preset": preset_name, "spec": spec.to_dict(), "config": cfg.to_dict(), "jigsaw": bool(jigsaw),
            "preprocess": self.params.to_dict(),
            "data": {"labels_sha256": sha256_file(Path(data_dir) / "labels.csv"), "pairs": len(self.records)},
        }
        self.state = self._open_state()

    # ---- state -------------------------------------------------------------------------------
    def _open_state(self) -> dict:
        p = self.out / STATE
        if p.is_file():
            state = json.loads(p.read_text())
            if state.get("fingerprint") != self.fingerprint:
                old, new = state.get("fingerprint", {}), self.fingerprint
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise RatingEdgeError(f"{self.out} holds a training run with other settings ({', '.join(diff)} "
                                      "differ); resume with the same data and options or choose a new folder")
            return state
        if self.out.exists() and any(self.out.iterdir()):
            raise RatingEdgeError(f"{self.out} exists, is not empty and holds no {STATE}; choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        return {"fingerprint": self.fingerprint, "networks": {}, "pretrain": {}}

    def _save_state(self) -> None:
        p = self.out / STATE
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(p)

    def _done(self, key: str, kind: str = "networks") -> bool:
        rec = self.state[kind].get(key)
        if not rec:
            return False
        f = self.out / rec["file"]
        return f.is_file() and sha256_file(f) == rec["sha256"]

    # ---- stages ------------------------------------------------------------------------------
    def _pretrained(self, fold: int, modality: str):
        """Jigsaw backbone of (fold, modality), trained once and cached in OUT/pretrain/."""
        if not self.jigsaw:
            return None
        from safetensors.torch import load_file

        from rating_edge.train.jigsaw import pretrain_backbone

        key = f"fold{fold}-{modality}"
        rel = f"pretrain/{key}.safetensors"
        if self._done(key, "pretrain"):
            b = ResNet18(2, self.spec.width)
            b.load_state_dict(load_file(str(self.out / rel)))
            return b
        images = (self.gs if modality == "gs" else self.dop)[self.fold != fold]
        task = self.progress(f"jigsaw {key}", self.cfg.jigsaw_epochs)
        t0 = time.perf_counter()
        b, losses = pretrain_backbone(images, self.spec.width, self.cfg,
                                      _seed_for(self.cfg.seed, fold, modality, 0, 0, "jigsaw"), task)
        self.state["pretrain"][key] = {"file": rel, "sha256": save_network(self.out / rel, b), "loss": losses,
                                       "seconds": round(time.perf_counter() - t0, 2)}
        self._save_state()
        self.log(f"jigsaw {key}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        return b

    def _backbone(self, init) -> ResNet18:
        b = ResNet18(2, self.spec.width)
        if init is not None:
            state = {k: v for k, v in init.state_dict().items() if not k.startswith("fc.")}
            b.load_state_dict(state, strict=False)
        return b

    def _train_backbone(self, images, y, init, seed: int, on_epoch) -> tuple[ResNet18, list]:
        rng = _rng_and_torch(seed)
        b = self._backbone(init)
        losses = fit(b, image_batches(images, self.cfg, rng), y, self.cfg.epochs, self.cfg, rng, on_epoch)
        return b, losses

    def train_network(self, fold: int, module: str, task: int, seed: int, on_epoch) -> tuple:
        tr = self.fold != fold
        grades = self.labels[:, 0 if module == "sh" else 1]
        y = (grades[tr] > task).astype(np.int64)
        s = lambda stage: _seed_for(self.cfg.seed, fold, module, task, seed, stage)  # noqa: E731
        if module == "sh":
            F, lf = self._train_backbone(self.gs[tr], y, self._pretrained(fold, "gs"), s("F"), on_epoch)
            G, lg = self._train_backbone(self.dop[tr], y, self._pretrained(fold, "doppler"), s("G"), on_epoch)
            net = SHNet(self.spec.width, self.spec.hidden)
            net.F, net.G = F, G
            feats = torch.cat([extract_features(F, self.gs[tr]), extract_features(G, self.dop[tr])], 1)
            rng = _rng_and_torch(s("H"))
            net.H.apply(_reset)  # seeded init of H
            lh = fit(net.H, lambda idx: feats[idx], y, self.cfg.head_epochs, self.cfg, rng, on_epoch)
            losses = {"F": lf, "G": lg, "H": lh}
        else:
            b, lb = self._train_backbone(self.dop[tr], y, self._pretrained(fold, "doppler"), s("VS"), on_epoch)
            net = VSNet(self.spec.width)
            net.load_state_dict(b.state_dict())
            losses = {"VS": lb}
        return net.eval(), losses

    def held_out(self, net, fold: int, module: str, task: int):
        from rating_edge.preprocess import normalize

        te = self.fold == fold
        if not te.any():
            return None
        grades = self.labels[te, 0 if module == "sh" else 1]
        with torch.no_grad():
            logits = net(torch.from_numpy(normalize(self.gs[te])), torch.from_numpy(normalize(self.dop[te])))
        return _held_out_auc((grades > task).astype(int), torch.softmax(logits, 1)[:, 1].numpy())

    def epochs_of(self, module: str) -> int:
        return 2 * self.cfg.epochs + self.cfg.head_epochs if module == "sh" else self.cfg.epochs


def _reset(m):
    if hasattr(m, "reset_parameters"):
        m.reset_parameters()


def train_ensemble(data_dir, out, spec: EnsembleSpec, cfg: TrainConfig, jigsaw: bool = False,
                   preset_name: str = "custom", max_networks: int | None = None, show_progress: bool = True,
                   threads: int | None = None, console=None) -> TrainResult:
    """Train (or resume) the ensemble in `out`. `max_networks` stops after that many newly trained
    networks (the run is resumable); the manifest `ensemble.json` is written once all are done."""
    from rich.console import Console

    from rating_edge.progress import progress_bar

    console = console or Console(stderr=True)
    torch.set_num_threads(torch_threads(spec.width, threads))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = TrainResult(Path(out))
    with progress_bar(console, "{task.fields[info]}", remaining=False, disable=not show_progress) as prog:
        overall = prog.add_task("networks", total=len(spec.network_ids()), info="")
        current = {"id": None}

        def make_task(desc: str, total: int):
            if current["id"] is not None:
                prog.remove_task(current["id"])
            current["id"] = prog.add_task(desc, total=total, info="")

            def on_epoch(epoch: int, loss: float):
                prog.update(current["id"], advance=1, info=f"loss {loss:.3f}")
            return on_epoch

        tr = _Trainer(data_dir, out, spec, cfg, jigsaw, preset_name, make_task, console.log if show_progress
                      else (lambda *a, **k: None))
        for nid in spec.network_ids():
            fold, module, task, seed = parse_network_id(nid)
            if tr._done(nid):
                result.skipped.append(nid)
                prog.advance(overall)
                continue
            if max_networks is not None and len(result.trained) >= max_networks:
                break
            t0, c0 = time.perf_counter(), time.process_time()
            on_epoch = make_task(nid, tr.epochs_of(module))
            net, losses = tr.train_network(fold, module, task, seed, on_epoch)
            rel = f"networks/{nid}.safetensors"
            digest = save_network(tr.out / rel, net)
            tr.state["networks"][nid] = {
                "file": rel, "sha256": digest, "module": module, "loss": losses,
                "held_out_auc": tr.held_out(net, fold, module, task),
                "seconds": round(time.perf_counter() - t0, 2),
                "cpu_seconds": round(time.process_time() - c0, 2)}
            tr._save_state()
            result.trained.append(nid)
            prog.advance(overall)
        if current["id"] is not None:
            prog.remove_task(current["id"])
    result.wall_s = time.perf_counter() - wall0
    result.cpu_s = time.process_time() - cpu0
    tr.state.setdefault("sessions", []).append({"trained": len(result.trained), "wall_s": round(result.wall_s, 1),
                                                "cpu_s": round(result.cpu_s, 1)})
    tr._save_state()
    if all(tr._done(n) for n in spec.network_ids()):
        _write_final(tr)
        result.complete = True
    return result


def _write_final(tr: _Trainer) -> Path:
    nets = tr.state["networks"]
    entries = {nid: {k: nets[nid][k] for k in ("file", "sha256", "module")} for nid in tr.spec.network_ids()}
    sessions = tr.state.get("sessions", [])
    meta = {
        "origin": "train",
        "preset": tr.fingerprint["preset"],
        "config": tr.cfg.to_dict(),
        "jigsaw_pretrain": tr.jigsaw,
        "preprocess": tr.params.to_dict(),
        "data": tr.fingerprint["data"],
        "split": split_summary(tr.records, tr.fold_of_patient, tr.spec.folds),
        "held_out_auc": {nid: nets[nid].get("held_out_auc") for nid in tr.spec.network_ids()},
        "train_wall_s": round(sum(s["wall_s"] for s in sessions), 1),
        "train_cpu_s": round(sum(s["cpu_s"] for s in sessions), 1),
    }
    return write_manifest(tr.out, tr.spec, entries, meta)


def is_complete(out) -> bool:
    return (Path(out) / MANIFEST).is_file()
