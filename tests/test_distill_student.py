"""The shared-backbone student: shapes, forward-only Grad-CAM, teacher initialisation, ONNX export."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from rating_edge.errors import RatingEdgeError  # noqa: E402
from rating_edge.export.student import SHARE_DEPTHS, StudentConfig, build_student  # noqa: E402
from rating_edge.heatmap import HEAT_TASK, normalize_heat  # noqa: E402
from rating_edge.spec import preset  # noqa: E402

SPEC = preset("tiny")


def _images(b, seed=0):
    rng = np.random.default_rng(seed)
    s = SPEC.input_size
    return (rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8), rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8))


@pytest.mark.parametrize("share_depth", SHARE_DEPTHS)
@pytest.mark.parametrize("branches", ["module", "fold"])
def test_shapes_and_ranges(share_depth, branches):
    st = build_student(SPEC, share_depth, branches).eval()
    gs, dop = _images(3)
    with torch.no_grad():
        sh, vs, hg, hd = st(torch.from_numpy(gs), torch.from_numpy(dop))
    assert sh.shape == vs.shape == (3, SPEC.folds, SPEC.tasks, SPEC.seeds)
    assert hg.shape == hd.shape == (3, SPEC.heat_size, SPEC.heat_size)
    for t in (sh, vs, hg, hd):
        assert torch.all((t >= 0) & (t <= 1))
    # every teacher network has exactly one head
    ids = [n for grp in st.head_ids("sh") + st.head_ids("vs") for n in grp]
    assert sorted(ids) == sorted(SPEC.network_ids())


def test_branch_count_follows_share_depth():
    assert len(build_student(SPEC, "all").branches) == 0
    st = build_student(SPEC, "layer3", "fold")
    assert {k: len(v) for k, v in st.branches.items()} == {"sh_gs": 5, "sh_doppler": 5, "vs_doppler": 5}
    assert list(st.branches["sh_gs"][0].stages) == ["layer3", "layer4"]
    assert st.trunk_gs.stages == ["layer1", "layer2"]


def test_bad_config_is_a_user_error():
    with pytest.raises(RatingEdgeError, match="share depth"):
        StudentConfig(SPEC, "layer5")
    with pytest.raises(RatingEdgeError, match="branches"):
        StudentConfig(SPEC, "layer4", "network")


@pytest.mark.parametrize("share_depth,branches", [("layer4", "fold"), ("all", "module")])
def test_forward_only_gradcam_equals_autograd(share_depth, branches):
    st = build_student(SPEC, share_depth, branches, seed=3).eval()
    gs, dop = _images(2, 1)
    x_gs, x_dop = st.normalize(torch.from_numpy(gs)), st.normalize(torch.from_numpy(dop))
    maps = st._maps(x_gs, x_dop)
    sh, _, _ = st._heads(maps)
    d = st._to_grid(sh[..., 1] - sh[..., 0])
    per_fold = st.cfg.groups == SPEC.folds
    cams = {"gs": [], "doppler": []}
    for f in range(SPEC.folds):
        for s in range(SPEC.seeds):
            grads = torch.autograd.grad(d[:, f, HEAT_TASK, s].sum(), [maps["sh_gs"], maps["sh_doppler"]],
                                        retain_graph=True)
            g = f if per_fold else 0
            for name, a, gr in (("gs", maps["sh_gs"], grads[0]), ("doppler", maps["sh_doppler"], grads[1])):
                alpha = gr[:, g].mean(dim=(2, 3), keepdim=True)
                cams[name].append(torch.relu((alpha * a[:, g]).sum(1)).detach().numpy())
    with torch.no_grad():
        _, _, hg, hd = st(torch.from_numpy(gs), torch.from_numpy(dop))
    np.testing.assert_allclose(hg.numpy(), normalize_heat(np.mean(cams["gs"], 0)), atol=1e-5)
    np.testing.assert_allclose(hd.numpy(), normalize_heat(np.mean(cams["doppler"], 0)), atol=1e-5)


def test_init_from_teacher_reproduces_fold0_sh_networks():
    from rating_edge.model.init import init_ensemble
    from rating_edge.model.reference import ReferenceEnsemble

    teachers = init_ensemble(SPEC, seed=2, share_backbones=True)
    gs, dop = _images(3, 2)
    ref = ReferenceEnsemble(SPEC, teachers).predict_probs(gs, dop)
    st = build_student(SPEC, "layer3", "module").eval()
    st.init_from_teacher(teachers)
    with torch.no_grad():
        sh = st(torch.from_numpy(gs), torch.from_numpy(dop))[0].numpy()
    # fold 0's six SH networks share F/G, which the student's trunks and SH branches copied
    np.testing.assert_allclose(sh[:, 0], ref["sh_prob"][:, 0], atol=1e-5)


@pytest.mark.parametrize("share_depth,branches", [("layer4", "module"), ("layer2", "fold")])
def test_onnx_matches_torch_student(tmp_path, share_depth, branches):
    import onnx
    import onnxruntime as ort

    from rating_edge.export.student_onnx import export_student_onnx

    st = build_student(SPEC, share_depth, branches, seed=1).eval()
    p = export_student_onnx(st, tmp_path / "s.onnx", batch=1)
    onnx.checker.check_model(onnx.load(str(p)), full_check=True)
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["gs", "doppler"]
    assert [o.name for o in sess.get_outputs()] == ["sh_prob", "vs_prob", "heat_gs", "heat_doppler"]
    gs, dop = _images(3, 4)  # exported at batch 1, run at batch 3: the batch axis is dynamic
    got = sess.run(None, {"gs": gs, "doppler": dop})
    with torch.no_grad():
        want = [t.numpy() for t in st(torch.from_numpy(gs), torch.from_numpy(dop))]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=2e-5)


def test_linear2_teachers_init_and_gradcam():
    """The authors' head (Linear -> Linear, no activation): the student copies it exactly (VS heads
    multiplied into one Linear) and its forward-only Grad-CAM stays the autograd one."""
    from dataclasses import replace

    from rating_edge.model.init import init_ensemble
    from rating_edge.model.reference import ReferenceEnsemble

    spec = replace(SPEC, head="linear2", folds=2)
    teachers = init_ensemble(spec, seed=4, share_backbones=True)
    gs, dop = _images(3, 5)
    ref = ReferenceEnsemble(spec, teachers).predict_probs(gs, dop)
    st = build_student(spec, "layer3", "module").eval()
    st.init_from_teacher(teachers)
    with torch.no_grad():
        sh, _, hg, _ = st(torch.from_numpy(gs), torch.from_numpy(dop))
    np.testing.assert_allclose(sh.numpy()[:, 0], ref["sh_prob"][:, 0], atol=1e-5)
    # each VS head is the teacher's two Linear layers multiplied into one: same logits on any features
    feats = torch.randn(4, spec.feature_dim)
    for gi, ids in enumerate(st.head_ids("vs")):
        for ki, nid in enumerate(ids):
            with torch.no_grad():
                want = teachers[nid].fc(feats)
                got = feats @ st.vs_w[gi, :, ki * 2:(ki + 1) * 2] + st.vs_b[gi, 0, ki * 2:(ki + 1) * 2]
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    x_gs, x_dop = st.normalize(torch.from_numpy(gs)), st.normalize(torch.from_numpy(dop))
    maps = st._maps(x_gs, x_dop)
    d = st._to_grid(st._heads(maps)[0][..., 1] - st._heads(maps)[0][..., 0])
    cams = []
    for f in range(spec.folds):
        for s in range(spec.seeds):
            gr = torch.autograd.grad(d[:, f, HEAT_TASK, s].sum(), [maps["sh_gs"]], retain_graph=True)[0]
            alpha = gr[:, 0].mean(dim=(2, 3), keepdim=True)
            cams.append(torch.relu((alpha * maps["sh_gs"][:, 0]).sum(1)).detach().numpy())
    np.testing.assert_allclose(hg.numpy(), normalize_heat(np.mean(cams, 0)), atol=1e-5)
