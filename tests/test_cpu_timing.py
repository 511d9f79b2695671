"""`rating-edge build PKG --cpu`: the CPU forms timed on the machine that runs the package (a scanner cart is
not the machine that quantized it), recorded in engines.json and used by `--backend auto`."""
from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from rating_edge.calibration.cpu_timing import record_cpu_timing
from rating_edge.cli import app
from rating_edge.infer.cpu_forms import choose_cpu_form, cpu_key
from rating_edge.package import load_package, write_engines_json


def test_build_cpu_records_this_machines_timings(small_shared_stack_pkg, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(small_shared_stack_pkg, pkg)
    assert not choose_cpu_form(load_package(pkg), have_openvino=False)["measured"]
    res = CliRunner().invoke(app, ["build", str(pkg), "--cpu"])
    assert res.exit_code == 0, res.output
    assert "auto runs" in res.output and "fastest measured on this CPU" in res.output
    side = json.loads((pkg / "engines.json").read_text())
    (rec,) = side["cpu_timings"]
    assert rec["on"] == cpu_key() and "ort-fp32" in rec["ms"] and rec["threads"]["ort-fp32"] >= 1
    p = load_package(pkg)  # engines.json stays valid against its schema and model.json
    c = choose_cpu_form(p)
    form = ("ort-" if c["backend"] == "ort" else "openvino-") + c["precision"]
    assert c["measured"] and form == min(rec["ms"], key=rec["ms"].get) and c["threads"] == rec["threads"][form]
    # another machine's timing is kept, this machine's replaced; a TensorRT build keeps them all
    foreign = {**rec, "on": {**rec["on"], "cpu": "Another CPU"}, "ms": {"ort-fp32": 0.001}}
    write_engines_json(pkg, [], [], side["cpu_timings"] + [foreign])
    record_cpu_timing(pkg, iters=2, log=lambda m: None)
    timings = json.loads((pkg / "engines.json").read_text())["cpu_timings"]
    assert len(timings) == 2 and {t["on"]["cpu"] for t in timings} == {cpu_key()["cpu"], "Another CPU"}
    write_engines_json(pkg, [], [])  # what a TensorRT build writes: cpu_timings untouched
    assert json.loads((pkg / "engines.json").read_text())["cpu_timings"] == timings
    # the foreign machine's (absurdly fast) figure never decides here
    assert "0.0 ms" not in choose_cpu_form(load_package(pkg))["why"]


def test_session_log_names_the_engine_auto_chose(small_shared_stack_pkg, tmp_path):
    """`run --backend auto` logs what ran (backend, precision, graphs, threads), not only "auto"."""
    import sqlite3

    from rating_edge.runtime.app import RunConfig, run

    cfg = RunConfig(source="phantom://?seed=1&fps=10&size=640x360&seconds=1", package=str(small_shared_stack_pkg),
                    backend="auto", log=str(tmp_path / "s.db"), max_frames=5)
    run(cfg)
    (label,) = sqlite3.connect(tmp_path / "s.db").execute("SELECT backend FROM sessions").fetchone()
    assert label.startswith("auto -> ") and "fp32 (default graphs, 1 thread)" in label, label
