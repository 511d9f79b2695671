"""Integrated-gradients maps (`rating-edge explain`) on a tiny ensemble with few steps."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_explain_writes_overlay_png(tmp_path, capsys):
    from rating_edge.cli import main
    from rating_edge.export.explain import integrated_gradients, overlay
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.model.reference import load_ensemble
    from rating_edge.spec import EnsembleSpec

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = EnsembleSpec(folds=1, width=8, input_size=32, hidden=8)
        write_random_ensemble(tmp_path / "ck", spec, seed=2)
        rng = np.random.default_rng(0)
        gs = rng.integers(0, 256, (32, 32, 3), np.uint8)
        dop = rng.integers(0, 256, (32, 32, 3), np.uint8)
        ref = load_ensemble(tmp_path / "ck")
        maps = integrated_gradients(ref, gs, dop, steps=4, samples=2)
        for m in maps.values():
            assert m.shape == (32, 32) and m.max() == pytest.approx(1.0)
            nz = m[m > 0]
            assert nz.min() >= 0.2 and (m == 0).any()  # values under 0.2 are zeroed
        again = integrated_gradients(ref, gs, dop, steps=4, samples=2)
        np.testing.assert_array_equal(maps["gs"], again["gs"])  # seeded noise: reproducible
        ov = overlay(gs, maps["gs"])
        untouched = maps["gs"] == 0
        np.testing.assert_array_equal(ov[untouched], gs[untouched])
        hot = maps["gs"] == 1
        assert (ov[hot][:, 2].astype(int) <= gs[hot][:, 2].astype(int)).all()  # yellow: blue falls

        cv2.imwrite(str(tmp_path / "g.png"), gs[:, :, ::-1])
        cv2.imwrite(str(tmp_path / "d.png"), dop[:, :, ::-1])
        out = tmp_path / "x.png"
        assert main(["explain", str(tmp_path / "ck"), "--gs", str(tmp_path / "g.png"), "--doppler",
                     str(tmp_path / "d.png"), "--out", str(out), "--steps", "2", "--samples", "1"]) == 0
        img = cv2.imread(str(out))
        assert img.shape == (32, 68, 3)
        assert main(["explain", str(tmp_path / "ck"), "--gs", str(tmp_path / "missing.png"), "--doppler",
                     str(tmp_path / "d.png"), "--out", str(out)]) == 2
    finally:
        torch.set_num_threads(old)
