"""`rating-edge plan` on a real tiny `stack` export made by the exporter."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
export = pytest.importorskip("rating_edge.export")
if not hasattr(export, "export_package"):
    pytest.skip("exporter not in this build", allow_module_level=True)

from rating_edge.bench.plan import count_package, count_structure, plan  # noqa: E402
from rating_edge.model.checkpoint import save_ensemble  # noqa: E402
from rating_edge.model.networks import build_network  # noqa: E402
from rating_edge.spec import preset  # noqa: E402


def resnet18_macs(width, size):
    """Closed form for torchvision's ResNet-18 convs at `width` base channels on a size x size input."""
    s = size
    s = (s + 2 * 3 - 7) // 2 + 1          # conv1
    macs = 3 * width * 49 * s * s
    s = (s + 2 - 3) // 2 + 1              # maxpool
    cin = width
    for i, mult in enumerate((1, 2, 4, 8)):
        c = width * mult
        for blk in range(2):
            stride = 2 if (i > 0 and blk == 0) else 1
            s_out = (s + 2 - 3) // stride + 1
            macs += cin * c * 9 * s_out * s_out + c * c * 9 * s_out * s_out
            if stride != 1 or cin != c:
                macs += cin * c * s_out * s_out
            s, cin = s_out, c
    return macs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # plain default-initialised networks: counting needs shapes, not calibrated weights (and the
    # random-ensemble initialiser's BatchNorm calibration costs a minute of CPU)
    d = tmp_path_factory.mktemp("ckpt") / "ens"
    sp = preset("tiny")
    save_ensemble(d, sp, {nid: build_network(nid, sp).eval() for nid in sp.network_ids()})
    return d


@pytest.fixture(scope="module")
def stack_pkg(ckpt, tmp_path_factory):
    return export.export_package(ckpt, tmp_path_factory.mktemp("pkg") / "stack", fuse="stack")


def test_stack_export_counts_every_backbone(stack_pkg):
    pkg = stack_pkg
    sp = preset("tiny")
    c = count_package(pkg)
    backbones = sp.folds * sp.seeds * sp.tasks * 3  # SH: F + G, VS: one, per network
    conv = backbones * resnet18_macs(sp.width, sp.input_size)
    # heads and Grad-CAM add a little on top of the convolutions, never less
    assert conv <= c.macs <= conv * 1.05
    res = plan(pkg, "orin-nano")
    assert res["kind"] == "estimate" and res["strategy"] == "stack"
    assert res["estimates"][0]["precision"] == "fp32"
    assert all(r["fits_30fps"] for r in res["estimates"])  # tiny ensembles are cheap everywhere



def test_structure_count_matches_the_real_stack_export(stack_pkg):
    """`plan --preset` (no package) counts what the exporter's stack graph really computes."""
    real = count_package(stack_pkg)
    est = count_structure(preset("tiny"))
    assert est.macs == pytest.approx(real.macs, rel=0.03)
    assert est.params == pytest.approx(real.params, rel=0.03)
