"""`rating-edge distill`: train the shared-backbone student from a checkpoint and package it."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rating_edge.errors import RatingEdgeError

console = Console(stderr=True)
HOLDOUT_SEED_OFFSET = 7919  # phantom hold-out pairs never share a generator seed with the training pairs


def _progress():
    from rating_edge.progress import progress_bar

    return progress_bar(console, "{task.fields[info]}")


def run_distill(ckpt: Path, out: Path, share_depth: str = "layer4", frames: str = "phantom:1024", epochs: int = 20,
                branches: str = "module", batch: int = 32, lr: float = 1e-3, seed: int = 0, init: str = "teacher",
                holdout: str = "phantom:200", restart: bool = False, threads: int = 0,
                save_frames: Path | None = None, teacher_cache: Path | None = None,
                loss: str = "mse", temperature: float = 2.0) -> dict:
    """The whole command as a function (tests and scripts call it): returns the package's fusion record."""
    import numpy as np
    import torch

    from rating_edge.export.distill import (
        DistillConfig,
        Distiller,
        _teacher_params,
        agreement,
        load_frames,
    )
    from rating_edge.model.checkpoint import read_manifest
    from rating_edge.model.reference import ReferenceEnsemble
    from rating_edge.package import load_package

    if threads > 0:
        torch.set_num_threads(threads)
    if epochs < 0:
        raise RatingEdgeError("--epochs must be 0 or more")
    if batch < 2:
        raise RatingEdgeError("--batch must be at least 2 (BatchNorm trains on batches)")
    manifest = read_manifest(ckpt)
    params = _teacher_params(manifest, manifest["spec_obj"])
    with console.status(f"preparing distillation frames ({frames})"):
        fr = load_frames(frames, params, seed)
    if save_frames is not None:
        from rating_edge.export.distill import save_frames as _save

        console.print(f"saved the frames to {_save(save_frames, fr)}")
    cfg = DistillConfig(share_depth=share_depth, branches=branches, epochs=epochs, batch=batch, lr=lr, seed=seed,
                        init=init, loss=loss, temperature=temperature)
    d = Distiller(ckpt, out, fr, cfg, restart=restart, console=console)
    if d.epoch:
        console.print(f"resuming after epoch {d.epoch} of {epochs} (state in {d.state_dir})")
    with _progress() as prog:
        if d.epoch < epochs:
            t = prog.add_task("teacher log-odds", total=len(fr), info="")
            d.teacher_targets(progress=lambda k: prog.update(t, completed=k), cache_dir=teacher_cache)
        while d.epoch < epochs:
            t = prog.add_task(f"epoch {d.epoch + 1}/{epochs}", total=len(fr), info="")
            d.train_epoch(on_batch=lambda k, loss, t=t: prog.update(t, advance=k, info=f"loss {loss:.4f}"))
            prog.update(t, info=f"loss {d.history[-1]['loss']:.4f}")
    d.write_package()
    result = None
    if holdout.lower() != "none":
        from rating_edge.infer.ort import OrtRunner

        with console.status(f"checking the package against the teacher on held-out frames ({holdout})"):
            ho = load_frames(holdout, params, seed + HOLDOUT_SEED_OFFSET)
            if ho.sha256 == fr.sha256:
                raise RatingEdgeError("the hold-out frames are the distillation frames; choose other --holdout data")
            ref = ReferenceEnsemble(d.spec, d.teachers).predict_probs(ho.gs, ho.doppler)
            with OrtRunner(load_package(out)) as r:
                outs = [r.infer({"gs": ho.gs[i:i + 64], "doppler": ho.doppler[i:i + 64]}) for i in range(0, len(ho), 64)]
            test = {k: np.concatenate([o[k] for o in outs]) for k in ("sh_prob", "vs_prob")}
            from rating_edge.scoring import Thresholds

            result = agreement(ref, test, ho.labels, Thresholds.from_meta(d.manifest))
            result.update({"source": ho.source, "sha256": ho.sha256})
        d.write_package(holdout=result)
        line = (f"hold-out ({result['pairs']} pairs) agreement with the teacher: SH {result['sh_agreement']:.3f}, "
                f"VS {result['vs_agreement']:.3f}, combined {result['combined_agreement']:.3f} "
                f"(kappa {result['combined_kappa']:.3f})")
        console.print(line)
        if "teacher_combined_accuracy" in result:
            console.print(f"combined accuracy vs truth: teacher {result['teacher_combined_accuracy']:.3f}, "
                          f"student {result['student_combined_accuracy']:.3f}")
    console.print(f"[green]wrote[/] {out} (distilled student, share depth {share_depth}, {d.epoch} epochs)")
    console.print(f"next: rating-edge verify {out} --reference {ckpt}   |   rating-edge bench {out} --reference {ckpt}", soft_wrap=True)
    return load_package(out).meta["fusion"]


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(
        ckpt: Path = typer.Argument(..., help="Teacher checkpoint folder (the 60-network ensemble)."),
        out_pkg: Path = typer.Argument(..., help="Output package folder (state for resuming lives in OUT_PKG/.distill)."),
        share_depth: str = typer.Option("layer4", help="First ResNet stage NOT shared: layer2|layer3|layer4, or all "
                                                      "(whole backbone shared per stream)."),
        frames: str = typer.Option("phantom:1024", help="Distillation frames: DATA folder, CALIB set, or phantom:N."),
        epochs: int = typer.Option(20, help="Total epochs (a rerun continues up to this many)."),
        branches: str = typer.Option("module", help="Owners of the unshared stages: module (3 branches) or fold (15)."),
        batch: int = typer.Option(32, help="Batch size."),
        lr: float = typer.Option(1e-3, help="Peak learning rate (cosine decay)."),
        seed: int = typer.Option(0, help="Seed for phantom frames, initialisation and shuffling."),
        init: str = typer.Option("teacher", help="teacher (start from teacher weights) or random."),
        holdout: str = typer.Option("phantom:200", help="Held-out frames for the agreement check, or none."),
        restart: bool = typer.Option(False, "--restart", help="Discard an unfinished run in OUT_PKG and start over."),
        threads: int = typer.Option(0, help="PyTorch threads (0 = its default; 1 is faster on a busy machine)."),
        save_frames: Path = typer.Option(None, "--save-frames", help="Also save the prepared frames as .npz for reuse."),
        teacher_cache: Path = typer.Option(None, "--teacher-cache", help="Folder that keeps the teacher's log-odds per "
                                                                         "(teacher, frames) for other runs."),
        loss: str = typer.Option("mse", help="mse (log-odds error) or kd (cross-entropy at --temperature)."),
        temperature: float = typer.Option(2.0, help="Temperature of the kd loss."),
    ):
        """Distil the ensemble into a shared-backbone student (fusion strategy "distill") and package it."""
        from rating_edge.cli_checks import check_count, check_positive

        check_count("--epochs", epochs)
        check_count("--batch", batch)
        check_positive("--lr", lr)
        check_count("--seed", seed, 0)
        check_count("--threads", threads, 0)
        check_positive("--temperature", temperature)
        run_distill(ckpt, out_pkg, share_depth, frames, epochs, branches, batch, lr, seed, init, holdout, restart,
                    threads, save_frames, teacher_cache, loss, temperature)
