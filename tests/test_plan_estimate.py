"""`rating-edge plan`: exact operation counts from ONNX graphs and the roofline arithmetic."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rating_edge.bench.plan import (  # noqa: E402
    DEVICES,
    GraphCount,
    PackageCount,
    count_graph,
    count_package,
    estimate,
    plan,
)
from rating_edge.cli import app  # noqa: E402
from rating_edge.errors import RatingEdgeError  # noqa: E402
from rating_edge.model.resnet import ResNet18  # noqa: E402
from rating_edge.package import write_model_json  # noqa: E402
from rating_edge.preprocess import PreprocessParams  # noqa: E402
from rating_edge.spec import preset  # noqa: E402


def torch_macs(model, x):
    """MACs by forward hooks: the independent reference for the ONNX count."""
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        total[0] += out.numel() * m.in_features

    hs = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hs += [m.register_forward_hook(lin_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0]


def export_resnet(path, width=8, size=64):
    m = ResNet18(2, width).eval()
    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(m, x, str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return m, x


def make_package(folder, files, precision="fp32", strategy="stack"):
    kind = "fused" if len(files) == 1 else "network"
    recs = [{"file": f, "kind": kind, **({"network": f"fold0-sh-gt0-seed{i}"} if kind == "network" else {})}
            for i, f in enumerate(files)]
    write_model_json(folder, {"spec": preset("tiny").to_dict(), "preprocess": PreprocessParams().to_dict(),
                              "graphs": recs, "precision": precision, "fusion": {"strategy": strategy}})
    return folder


@pytest.fixture(scope="module")
def resnet_pkg(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    m, x = export_resnet(d / "model.onnx")
    make_package(d, ["model.onnx"])
    return d, torch_macs(m, x), sum(p.numel() for p in m.parameters())


def test_resnet_macs_match_torch_hooks(resnet_pkg):
    d, ref, _ = resnet_pkg
    c = count_graph(d / "model.onnx")
    assert c.macs == ref
    assert c.mac_layers == 21  # 20 convs (17 + 3 downsample) + fc
    assert not c.unknown_shapes


def test_paper_size_resnet18_is_1_82_gmac(tmp_path):
    m, x = export_resnet(tmp_path / "r.onnx", width=64, size=224)
    c = count_graph(tmp_path / "r.onnx")
    assert c.macs == torch_macs(m, x)
    assert abs(c.macs / 1e9 - 1.82) < 0.01


def test_external_data_is_counted_without_reading_weights(tmp_path, resnet_pkg):
    d, ref, params = resnet_pkg
    model = onnx.load(str(d / "model.onnx"))
    out = tmp_path / "ext.onnx"
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()  # counting must not need the weights themselves
    c = count_graph(out)
    assert c.macs == ref
    # BatchNorm folding in the exporter may change the initializer set, so compare with the graph itself
    assert c.params == sum(int(np.prod(i.dims)) for i in model.graph.initializer)


def test_grouped_conv_gemm_and_batched_matmul(tmp_path):
    w = numpy_helper.from_array(np.zeros((32, 2, 3, 3), np.float32), "w")          # 16 groups x (2 -> 2)
    b = numpy_helper.from_array(np.zeros((4, 16, 8), np.float32), "b")             # batched matmul weights
    g = numpy_helper.from_array(np.zeros((10, 7), np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=16, pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "b"], ["mm"]),
             helper.make_node("Gemm", ["v", "g"], ["gm"])]
    shape = numpy_helper.from_array(np.array([4, 50, 16], np.int64), "shape")  # 32*10*10 = 3200 = 4*50*16
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 10, 10]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("mm", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("gm", TensorProto.FLOAT, None)],
        [w, b, g, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "t.onnx"))
    c = count_graph(tmp_path / "t.onnx")
    conv = 32 * 10 * 10 * 2 * 9
    mm = 4 * 50 * 8 * 16
    gemm = 1 * 7 * 10
    assert c.macs == conv + mm + gemm
    assert c.act_elems == 3200 + 4 * 50 * 8 + 7


def test_none_package_sums_its_graphs(tmp_path, resnet_pkg):
    d, ref, _ = resnet_pkg
    pk = tmp_path / "none"
    pk.mkdir()
    for i in range(3):
        (pk / f"n{i}.onnx").write_bytes((d / "model.onnx").read_bytes())
    make_package(pk, [f"n{i}.onnx" for i in range(3)], strategy="none")
    c = count_package(pk)
    assert c.macs == 3 * ref and len(c.graphs) == 3 and c.strategy == "none"


def test_roofline_arithmetic():
    g = GraphCount("x", macs=10**9, params=10**8, mac_layers=100, act_elems=10**6, input_bytes=0)
    c = PackageCount("p", "stack", "fp32", [g])
    dev = DEVICES["orin-nano"]
    r = estimate(c, "orin-nano", "fp16", compute_eff=0.5, memory_eff=0.5, launch_us=10)
    assert r["estimate"] is True
    compute = 2e9 / (dev.fp16_tflops * 1e12 * 0.5) * 1e3
    memory = (2e8 + 2 * 2e6) / (dev.bandwidth_gbs * 1e9 * 0.5) * 1e3
    assert r["compute_ms"] == pytest.approx(compute)
    assert r["memory_ms"] == pytest.approx(memory)
    assert r["latency_ms"] == pytest.approx(max(compute, memory) + 1.0)
    assert r["bound"] == "memory"  # 200 MB of weights on 68 GB/s dominates 2 GFLOP on 10 TFLOPS
    assert r["fits_30fps"] == (r["latency_ms"] <= 1000 / 30)
    r8 = estimate(c, "orin-nano", "int8", compute_eff=0.5, memory_eff=0.5, launch_us=10)
    assert r8["memory_ms"] == pytest.approx(memory / 2)
    # the DLA only adds where the module has one
    assert estimate(c, "agx-orin", "int8", dla=True)["compute_ms"] < estimate(c, "agx-orin", "int8")["compute_ms"]


def test_paper_scale_weights_make_orin_nano_miss_30fps():
    # docs/design/model.md: 90 backbones ~ 1.0 G params, ~330 GFLOP per pair
    g = GraphCount("x", macs=165 * 10**9, params=10**9, mac_layers=90 * 21, act_elems=90 * 2_500_000)
    c = PackageCount("p", "stack", "fp32", [g])
    r = estimate(c, "orin-nano", "fp16")
    assert not r["fits_30fps"]
    assert r["memory_ms"] > 30  # ~2 GB of FP16 weights on 68 GB/s
    assert estimate(c, "h200", "fp16")["fits_30fps"]


def test_bad_inputs_are_clear(tmp_path, resnet_pkg):
    d, _, _ = resnet_pkg
    with pytest.raises(RatingEdgeError, match="unknown device"):
        plan(d, "raspberry-pi")
    with pytest.raises(RatingEdgeError, match="unknown precision"):
        plan(d, "orin-nx", ["fp8"])
    with pytest.raises(RatingEdgeError, match="not a model package"):
        plan(tmp_path, "orin-nx")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"not onnx at all")
    make_package(bad, ["model.onnx"])
    with pytest.raises(RatingEdgeError, match="not a readable ONNX"):
        plan(bad, "orin-nx")


def test_cli_json_and_table(tmp_path, resnet_pkg):
    d, ref, _ = resnet_pkg
    runner = CliRunner()
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(d), "--device", "xavier-nx", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "ESTIMATE" in r.output
    res = json.loads(out.read_text())
    assert res["kind"] == "estimate" and res["gmacs_per_pair"] == pytest.approx(ref / 1e9)
    assert [e["precision"] for e in res["estimates"]] == ["fp32", "fp16", "int8"]
    assert "Xavier NX" in res["device"]["source"]
    r = runner.invoke(app, ["plan", str(d), "--device", "nope"])
    assert r.exit_code != 0


def test_cli_preset_structure_without_package():
    r = CliRunner().invoke(app, ["plan", "--preset", "tiny", "--device", "agx-orin", "--json", "-"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])
    assert res["kind"] == "estimate" and res["package"] == "structure:90-backbones"
    r = CliRunner().invoke(app, ["plan", "--device", "agx-orin"])
    assert r.exit_code != 0
