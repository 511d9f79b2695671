"""jetson/: shell scripts parse (and pass shellcheck where installed), setup.sh picks the buffer module
for each JetPack, bench.sh runs end to end against stand-in tools, and the unit and env file agree."""
import configparser
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JET = ROOT / "jetson"
SCRIPTS = [JET / "setup.sh", JET / "bench.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


SUPPORTED = {
    "jp6.2": ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025",
              "10.3.0.30", "12.6.68", "3.10", "36.4.3", "6", "cuda-python>=12.0,<13.0"),
    "jp7-trt11": ("# R38 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64, DATE: Mon Jan  5 10:00:00 UTC 2026",
                  "11.4.0.0", "13.0.48", "3.12", "38.4.0", "7", "cuda-python>=13.0,<14.0"),
}
# JetPack 4/5 ship TensorRT 8 and Python 3.6/3.8, JetPack 6.0 TensorRT 8.6; the code needs TensorRT >= 10 and
# Python >= 3.10.
UNSUPPORTED = {
    "jp4": ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t186ref, EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023",
            "8.2.1.8", "10.2.300", "3.6", ["JetPack 4 is not supported", "TensorRT 8.2.1.8 is not supported",
                                            "Python 3.6 is not supported"]),
    "jp5": ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023",
            "8.5.2.2", "11.4.315", "3.8", ["JetPack 5 is not supported", "TensorRT 8.5.2.2 is not supported",
                                            "Python 3.8 is not supported"]),
    "jp6.0": ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024",
              "8.6.2.3", "12.2.140", "3.10", ["JetPack 6.0 (L4T 36.3.0) is not supported", "TensorRT 8.6.2.3 is not supported"]),
    "jp6.2-old-python": ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025",
                         "10.3.0.30", "12.6.68", "3.9", ["Python 3.9 is not supported"]),
}


def _dry_run(tmp_path, line, trt, cuda, py):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(line + "\n")
    env = dict(os.environ, L4T_RELEASE_FILE=str(rel), TRT_VERSION=trt, CUDA_VERSION=cuda, PY_VERSION=py)
    return subprocess.run([str(JET / "setup.sh"), "--dry-run"], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_setup_detects_release_and_picks_buffer_module(tmp_path, name):
    line, trt, cuda, py, l4t, jp, pkg = SUPPORTED[name]
    r = _dry_run(tmp_path, line, trt, cuda, py)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"L4T release      : {l4t}  (JetPack {jp})" in r.stdout
    assert f"TensorRT         : {trt}" in r.stdout and f"CUDA             : {cuda}" in r.stdout
    assert f"Python           : {py}" in r.stdout
    assert re.search(r"install\s+: -e .*\[runtime\] " + re.escape(pkg), r.stdout), r.stdout
    assert "dry run: nothing installed" in r.stdout and "error:" not in r.stdout


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_setup_refuses_unsupported_releases(tmp_path, name):
    line, trt, cuda, py, reasons = UNSUPPORTED[name]
    r = _dry_run(tmp_path, line, trt, cuda, py)
    assert r.returncode == 1, r.stdout
    for reason in reasons:
        assert f"error: {reason}" in r.stdout
    assert "nothing installed" in r.stdout and "JetPack 6.1+ or 7" in r.stdout


def test_setup_refuses_a_non_jetson(tmp_path):
    env = dict(os.environ, L4T_RELEASE_FILE=str(tmp_path / "absent"), PATH="/usr/bin:/bin")
    env.pop("TRT_VERSION", None)
    r = subprocess.run([str(JET / "setup.sh"), "--dry-run"], capture_output=True, text=True, env=env)
    if r.returncode == 0:  # this machine has an L4T package installed (a real Jetson): nothing to check
        pytest.skip("running on a Jetson")
    assert r.returncode == 1 and "not a Jetson" in r.stdout


def _exe(path: Path, text: str):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_bench_sh_with_stand_in_tools(tmp_path, tiny_stack_pkg):
    """bench.sh's own logic with stand-ins for the Jetson tools (tegrastats, nvpmodel): records the power
    mode without changing it, scores pairs for real (ONNX Runtime here), summarises the power log."""
    pytest.importorskip("onnxruntime")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls.txt"
    line = ("11-29-2026 02:50:{s:02d} RAM 2018/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729] "
            "EMC_FREQ 10%@2133 GR3D_FREQ 90%@[611] cpu@47.5C gpu@51.4C tj@51.5C VDD_IN 8000mW/8000mW "
            "VDD_CPU_GPU_CV 3500mW/3500mW VDD_SOC 1400mW/1400mW")
    _exe(bin_ / "tegrastats", "#!/usr/bin/env bash\n"
         f"echo tegrastats \"$@\" >> {calls}\n"
         "trap 'exit 0' TERM\n"
         "for i in $(seq 0 59); do\n"
         f"  echo \"{line.replace('{s:02d}', '$(printf %02d $i)')}\"\n"
         "  sleep 0.02\n"
         "done\n")
    _exe(bin_ / "nvpmodel", f"#!/usr/bin/env bash\necho nvpmodel \"$@\" >> {calls}\n"
         "echo 'NV Power Mode: 15W'; echo 0\n")
    _exe(bin_ / "rating-edge", f"#!/usr/bin/env bash\necho rating-edge \"$@\" >> {calls}\n")
    pkg = tiny_stack_pkg  # a real package: the runner checks every output is there
    out = tmp_path / "res"
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    r = subprocess.run([str(JET / "bench.sh"), str(pkg), "--backend", "ort", "--iters", "50", "--out", str(out),
                        "--interval", "1000"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    log = calls.read_text()
    assert "nvpmodel -q" in log and "nvpmodel -m" not in log  # recorded, never changed
    assert "rating-edge build" not in log  # no engine build for the ONNX Runtime backend
    assert "NV Power Mode: 15W" in (out / "machine.txt").read_text()
    run = json.loads((out / "power-run.json").read_text())
    assert run["pairs"] == 50 and run["seconds"] > 0 and run["backend"] == "ort"
    power = json.loads((out / "power.json").read_text())
    assert power["avg_power_w"] == pytest.approx(8.0) and power["power_source"] == "VDD_IN"
    assert power["energy_per_pair_j"] == pytest.approx(8.0 * run["seconds"] / 50)
    assert "per scored pair" in r.stdout


def test_bench_sh_rejects_bad_arguments(tmp_path):
    r = subprocess.run([str(JET / "bench.sh")], capture_output=True, text=True)
    assert r.returncode == 2
    r = subprocess.run([str(JET / "bench.sh"), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a model package" in r.stderr


def _env_file():
    keys = {}
    for ln in (JET / "rating-edge.env.example").read_text().splitlines():
        ln = ln.strip()
        if ln and not ln.startswith("#"):
            k, sep, v = ln.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", k), f"bad env line {ln!r}"
            keys[k] = v
    return keys


def test_systemd_unit_and_env_file_agree():
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((JET / "rating-edge.service").read_text())
    assert {"Unit", "Service", "Install"} <= set(cp.sections())
    svc = cp["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["EnvironmentFile"].endswith("rating-edge.env")
    assert cp["Install"]["WantedBy"] in ("multi-user.target", "graphical.target")
    exec_start = svc["ExecStart"]
    assert re.search(r"rating-edge run\b", exec_start)
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", exec_start))
    env = _env_file()
    assert {"RATING_EDGE_PACKAGE", "RATING_EDGE_PROFILE", "RATING_EDGE_SOURCE"} <= used
    assert used <= set(env), f"unit uses {sorted(used - set(env))} which the env file lacks"
    assert all(env[k] for k in ("RATING_EDGE_PACKAGE", "RATING_EDGE_PROFILE", "RATING_EDGE_SOURCE"))
    assert env["RATING_EDGE_BACKEND"] in ("trt", "ort")


def test_dockerfile_uses_l4t_tensorrt_base():
    text = (JET / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/l4t-tensorrt:r10\.", text, re.M)  # JetPack 6, TensorRT 10
    assert "r8." not in text  # no JetPack 5 (TensorRT 8) image: the code refuses TensorRT < 10
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert '".[runtime]"' in text and 'ENTRYPOINT ["rating-edge"]' in text
