"""Parse `tegrastats` logs (JetPack 4, 5 and 6) and turn them into power and energy per scored pair.

Why: on a Jetson the question is not only pairs/s but watts and joules per scored pair (an ultrasound
cart has a power budget and a fan). tegrastats is the one power meter present on every module, but
its line format differs by module and JetPack release:

    JetPack 4 (L4T 32, Nano):       ... POM_5V_IN 2701/2701 POM_5V_GPU 0/0 POM_5V_CPU 497/497
    JetPack 4 (Xavier NX):          ... VDD_IN 3753/3753 VDD_CPU_GPU_CV 536/536 VDD_SOC 1221/1221
    JetPack 4 (AGX Xavier):         ... GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 SYS5V 1416/1416
    JetPack 5/6 (Orin):             MM-DD-YYYY HH:MM:SS RAM ... GR3D_FREQ 0%@[305,305] ... VDD_IN 4717mW/4717mW

Power rails are "current/average" in mW (unit suffix since JetPack 5). The average tegrastats prints
is since *its* start, so summaries here average the instantaneous values of the samples instead.
Total power: the module input rail where the module has one (VDD_IN; POM_5V_IN on Nano/TX1), else the
sum of all reported rails except NC (AGX Xavier, AGX Orin: what jtop also reports as total). Carrier
board, fan and display are outside every rail tegrastats sees.

No torch: this runs on the Jetson next to `bench.sh`.
`python -m rating_edge.bench.tegrastats summarize LOG --pairs N --seconds S [--json]`.
`python -m rating_edge.bench.tegrastats measure PKG --backend trt --pairs N --json OUT` is the power run
bench.sh samples: only the package, back to back at batch 1, so the watts tegrastats sees belong to it
(`rating-edge bench` also runs the naive PyTorch baseline, which would mix its power in).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# Sensors that report a fixed placeholder (PMIC@100C) or "absent" (-256C on Orin CV/GPU when off).
IGNORED_TEMPS = {"PMIC", "pmic"}
ABSENT_TEMP = -256.0

_TIME = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")


@dataclass
class Sample:
    """One tegrastats line. Missing fields stay None/empty (modules and releases differ)."""

    time: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load: list = field(default_factory=list)       # per core: percent or None when the core is off
    cpu_freq_mhz: list = field(default_factory=list)   # per core: MHz or None
    gpu_load: int | None = None                         # GR3D_FREQ percent
    gpu_freq_mhz: int | None = None                     # highest GPC frequency
    emc_load: int | None = None
    emc_freq_mhz: int | None = None
    temps_c: dict = field(default_factory=dict)
    rails_mw: dict = field(default_factory=dict)        # name -> instantaneous mW
    rails_avg_mw: dict = field(default_factory=dict)    # name -> tegrastats' running average

    @property
    def total_power_mw(self) -> float | None:
        return total_power(self.rails_mw)[0]


def total_power(rails: dict) -> tuple[float | None, str]:
    for r in INPUT_RAILS:
        if r in rails:
            return float(rails[r]), r
    usable = {k: v for k, v in rails.items() if k != "NC"}
    if not usable:
        return None, "none"
    return float(sum(usable.values())), "sum(" + "+".join(sorted(usable)) + ")"


def parse_line(line: str) -> Sample | None:
    """A Sample, or None for lines that are not tegrastats output (blank, shell noise)."""
    if "RAM " not in line and "CPU [" not in line and not _RAIL.search(line):
        return None
    s = Sample()
    m = _TIME.match(line)
    if m:
        s.time = datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S").isoformat()
        line = line[m.end():]
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        s.swap_used_mb, s.swap_total_mb = int(m.group(1)), int(m.group(2))
    if m := _CPU.search(line):
        shared_freq = int(m.group(2)) if m.group(2) else None   # old form: CPU [x%,y%]@freq
        for item in m.group(1).split(","):
            item = item.strip()
            if not item:
                continue
            if item == "off":
                s.cpu_load.append(None)
                s.cpu_freq_mhz.append(None)
                continue
            cm = re.fullmatch(r"(\d+)%(?:@(\d+))?", item)
            if cm:
                s.cpu_load.append(int(cm.group(1)))
                s.cpu_freq_mhz.append(int(cm.group(2)) if cm.group(2) else shared_freq)
    if m := _GR3D.search(line):
        s.gpu_load = int(m.group(1))
        if m.group(2):
            s.gpu_freq_mhz = max(int(x) for x in m.group(2).split(",") if x)
    if m := _EMC.search(line):
        s.emc_load = int(m.group(1))
        s.emc_freq_mhz = int(m.group(2)) if m.group(2) else None
    # Temperatures and rails come after the CPU list; cut it out so "12%@1190" never reads as either.
    rest = _CPU.sub(" ", line)
    for name, val in _TEMP.findall(rest):
        v = float(val)
        if v <= ABSENT_TEMP or name in IGNORED_TEMPS:
            continue
        s.temps_c[name] = v
    for name, cur, avg in _RAIL.findall(rest):
        if name in ("RAM", "SWAP", "IRAM"):
            continue
        if name == "NC":
            continue
        s.rails_mw[name] = int(cur)
        s.rails_avg_mw[name] = int(avg)
    return s


def parse_lines(lines) -> list[Sample]:
    return [s for s in (parse_line(ln) for ln in lines) if s is not None]


def parse_log(path) -> list[Sample]:
    return parse_lines(Path(path).read_text(errors="replace").splitlines())


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(samples: list[Sample], pairs: int | None = None, seconds: float | None = None,
              interval_ms: float | None = None) -> dict:
    """Average power and energy; per pair when the pair count and the run's duration are known.

    Duration: `seconds` if given (what the benchmark measured), else from the samples' timestamps
    (first to last, plus one interval), else samples x interval_ms.
    """
    if not samples:
        raise ValueError("no tegrastats samples in the log (was tegrastats running, and is this its output?)")
    totals = []
    source = "none"
    for s in samples:
        p, src = total_power(s.rails_mw)
        if p is not None:
            totals.append(p)
            source = src
    if seconds is None:
        times = [datetime.fromisoformat(s.time) for s in samples if s.time]
        if len(times) >= 2:
            seconds = (times[-1] - times[0]).total_seconds() + (interval_ms or 1000.0) / 1000.0
        elif interval_ms:
            seconds = len(samples) * interval_ms / 1000.0
    rails = sorted({k for s in samples for k in s.rails_mw})
    avg_w = _mean(totals) / 1000.0 if totals else None
    out = {
        "samples": len(samples),
        "seconds": seconds,
        "power_source": source,
        "avg_power_w": avg_w,
        "peak_power_w": max(totals) / 1000.0 if totals else None,
        "rails_avg_w": {r: _mean([s.rails_mw.get(r) for s in samples]) / 1000.0 for r in rails},
        "gpu_load_avg_pct": _mean([s.gpu_load for s in samples]),
        "gpu_freq_max_mhz": max((s.gpu_freq_mhz for s in samples if s.gpu_freq_mhz), default=None),
        "emc_load_avg_pct": _mean([s.emc_load for s in samples]),
        "cpu_load_avg_pct": _mean([_mean(s.cpu_load) for s in samples]),
        "ram_used_max_mb": max((s.ram_used_mb for s in samples if s.ram_used_mb is not None), default=None),
        "temp_max_c": max((v for s in samples for v in s.temps_c.values()), default=None),
        "energy_j": None, "pairs": pairs, "energy_per_pair_j": None, "pairs_per_joule": None,
    }
    if avg_w is not None and seconds:
        out["energy_j"] = avg_w * seconds
        if pairs:
            out["energy_per_pair_j"] = out["energy_j"] / pairs
            out["pairs_per_joule"] = pairs / out["energy_j"]
    return out


def format_summary(res: dict) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = [f"tegrastats: {res['samples']} samples over {f(res['seconds'], '.1f')} s "
             f"(total power = {res['power_source']})",
             f"  average power   {f(res['avg_power_w'], '.2f')} W (peak {f(res['peak_power_w'], '.2f')} W)",
             f"  energy          {f(res['energy_j'], '.1f')} J"]
    if res["pairs"]:
        lines.append(f"  per scored pair {f(res['energy_per_pair_j'] and res['energy_per_pair_j'] * 1000, '.1f')} mJ "
                     f"({res['pairs']} pairs; {f(res['pairs_per_joule'], '.2f')} pairs/J)")
    lines.append(f"  GPU load        {f(res['gpu_load_avg_pct'], '.0f')} % (max {f(res['gpu_freq_max_mhz'], '')} MHz), "
                 f"EMC {f(res['emc_load_avg_pct'], '.0f')} %, CPU {f(res['cpu_load_avg_pct'], '.0f')} %")
    lines.append(f"  max temperature {f(res['temp_max_c'], '.1f')} C; RAM used max {f(res['ram_used_max_mb'], '')} MB")
    for r, w in res["rails_avg_w"].items():
        lines.append(f"  rail {r:<18} {w:.2f} W")
    return "\n".join(lines)


def measure(package, backend: str = "trt", pairs: int = 1000, warmup: int = 10, variant: str | None = None,
            seed: int = 0) -> dict:
    """Score `pairs` random uint8 pairs back to back; returns the timed window (wall clock, for tegrastats)."""
    import time

    import numpy as np

    from rating_edge.infer import make_runner

    if pairs < 1:
        raise ValueError("--pairs must be at least 1")
    runner = make_runner(package, backend=backend, variant=variant)
    with runner:
        s = runner.spec.input_size
        rng = np.random.default_rng(seed)
        feed = {"gs": rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8),
                "doppler": rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)}
        for _ in range(max(0, warmup)):
            runner.infer(feed)
        t_start = time.time()
        p0 = time.perf_counter()
        for _ in range(pairs):
            runner.infer(feed)
        seconds = time.perf_counter() - p0
        t_end = time.time()
        # the arithmetic that ran: a TensorRT engine's build precision, else the runner's or the graphs'
        recs = getattr(runner, "records", None) or [{}]
        precision = (getattr(runner, "info", {}).get("precision") or recs[0].get("precision")
                     or ("int8" if str(getattr(runner, "variant", "") or "").startswith("int8") else "fp32"))
    return {"package": str(package), "backend": backend, "precision": precision, "variant": variant, "pairs": pairs,
            "seconds": seconds,
            "pairs_per_s": pairs / seconds if seconds > 0 else None, "t_start": t_start, "t_end": t_end}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rating_edge.bench.tegrastats",
                                 description="Summarise a tegrastats log: average power, energy per scored pair.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sm = sub.add_parser("summarize", help="power/energy summary of a log")
    sm.add_argument("log", type=Path)
    sm.add_argument("--pairs", type=int, default=None, help="pairs scored during the log")
    sm.add_argument("--seconds", type=float, default=None, help="duration of the run (default: from timestamps)")
    sm.add_argument("--interval-ms", type=float, default=None, help="tegrastats --interval used (default 1000)")
    sm.add_argument("--skip", type=int, default=0, help="drop the first N samples (engine loading, warm-up)")
    sm.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the summary as JSON")
    ms = sub.add_parser("measure", help="score N pairs on a package back to back (the window to sample power in)")
    ms.add_argument("package", type=Path)
    ms.add_argument("--backend", default="trt", choices=["trt", "ort", "openvino", "openvino:fp32", "openvino:bf16", "openvino:int8", "auto"])
    ms.add_argument("--variant", default=None)
    ms.add_argument("--pairs", type=int, default=1000)
    ms.add_argument("--warmup", type=int, default=10)
    ms.add_argument("--json", dest="json_out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        from rating_edge.errors import RatingEdgeError

        try:
            res = measure(a.package, a.backend, a.pairs, a.warmup, a.variant)
        except (RatingEdgeError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{res['pairs']} pairs in {res['seconds']:.2f} s = {res['pairs_per_s']:.1f} pairs/s "
              f"({a.backend}{', ' + a.variant if a.variant else ''})")
        if a.json_out:
            a.json_out.write_text(json.dumps(res, indent=2))
        return 0
    if not a.log.is_file():
        print(f"error: {a.log}: no such log file", file=sys.stderr)
        return 2
    try:
        samples = parse_log(a.log)
        if a.skip > 0 and len(samples) > 2 * a.skip:
            samples = samples[a.skip:]
        elif a.skip > 0:
            print(f"warning: only {len(samples)} samples; keeping all (--skip {a.skip} needs more)", file=sys.stderr)
        res = summarize(samples, a.pairs, a.seconds, a.interval_ms)
    except ValueError as e:
        print(f"error: {a.log}: {e}", file=sys.stderr)
        return 2
    print(format_summary(res))
    if a.json_out:
        a.json_out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Sample", "parse_line", "parse_lines", "parse_log", "summarize", "total_power", "format_summary"]
