"""Shared, session-scoped fixtures: the tiny ensembles and packages most modules need are built once
per test run, and every test runs with one thread per engine (a shared 2-core CI box: spin-waiting
thread pools on an oversubscribed CPU are 10-20x slower)."""
from __future__ import annotations

import os

import pytest

os.environ["RATING_EDGE_THREADS"] = "1"  # read by rating_edge.threads for every runner and torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:  # runtime-only installs: nothing to set
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-weight tiny-preset checkpoint folder (60 networks, BatchNorm calibrated). Read-only:
    tests that change it copy it first."""
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.spec import preset

    out = tmp_path_factory.mktemp("tiny_ckpt") / "ens"
    write_random_ensemble(out, preset("tiny"), seed=3)
    return out


@pytest.fixture(scope="session")
def tiny_stack_pkg(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint exported as a fused `stack` package. Read-only."""
    from rating_edge.export.exporter import export_package

    return export_package(tiny_ckpt, tmp_path_factory.mktemp("tiny_pkg") / "stack", fuse="stack")


@pytest.fixture(scope="session")
def small_shared_stack_pkg(tmp_path_factory):
    """A 2-fold, width-8, 32 px ensemble with shared backbones, exported as `stack`: the cheapest package
    that still exercises every output (archive and PACS tests). Read-only."""
    from rating_edge.export.exporter import export_package
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.spec import EnsembleSpec

    d = tmp_path_factory.mktemp("small_pkg")
    write_random_ensemble(d / "ck", EnsembleSpec(folds=2, width=8, input_size=32, hidden=8), seed=3,
                          share_backbones=True)
    return export_package(d / "ck", d / "pkg", fuse="stack")
