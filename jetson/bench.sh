#!/usr/bin/env bash
# Benchmark a model package on this Jetson with power: build the TensorRT engine, score pairs back to
# back while `tegrastats` samples the power rails, and report pairs/s, average power and energy per
# scored pair; optionally also `rating-edge bench` side by side with the naive baseline.
#
# usage: jetson/bench.sh PKG [--precision fp16|int8] [--iters N] [--out DIR] [--interval MS]
#                            [--backend trt|ort] [--reference CKPT] [--jetson-clocks] [--no-build]
#   --precision      engine precision for `rating-edge build` (default int8)
#   --iters N        pairs scored in the power run (default 1000; longer runs average better)
#   --out DIR        results folder (default bench-<hostname>-<date>)
#   --interval MS    tegrastats sampling interval (default 200)
#   --backend        trt (the engine built here, default) or ort (ONNX Runtime, CPU) for the power run
#   --reference CKPT also run `rating-edge bench` side by side with the naive 60-network baseline
#   --jetson-clocks  lock clocks at maximum with jetson_clocks for the run (restored afterwards);
#                    without it the clocks are left as they are
#   --no-build       use the engine already in the package
# The power mode (nvpmodel) is recorded, never changed. Environment: RATING_EDGE (the CLI, default
# rating-edge), PYTHON (default: the python next to the CLI, else python3).
set -euo pipefail

usage() { sed -n '2,19p' "$0"; }

pkg=""
precision="int8"
iters=1000
out=""
interval=200
reference=""
backend="trt"
compare_iters=50
clocks=0
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --precision) precision=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    --reference) reference=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --jetson-clocks) clocks=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -z "$pkg" ]; then pkg=$1; shift; else echo "bench.sh: one package only" >&2; exit 2; fi ;;
  esac
done
if [ -z "$pkg" ]; then usage >&2; exit 2; fi
if [ ! -f "$pkg/model.json" ]; then echo "bench.sh: $pkg is not a model package (no model.json)" >&2; exit 2; fi
case "$precision" in fp16|int8|fp32) ;; *) echo "bench.sh: --precision must be fp16, int8 or fp32" >&2; exit 2 ;; esac
case "$backend" in trt|ort) ;; *) echo "bench.sh: --backend must be trt or ort" >&2; exit 2 ;; esac

cli=${RATING_EDGE:-rating-edge}
if ! command -v "$cli" >/dev/null 2>&1; then
  echo "bench.sh: '$cli' not found; run jetson/setup.sh and activate its virtualenv" >&2
  exit 2
fi
cli_dir=$(dirname "$(command -v "$cli")")
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$cli_dir/python" ]; then PYTHON="$cli_dir/python"; else PYTHON=python3; fi
fi
out=${out:-bench-$(hostname)-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

# --- record the machine state (never change the power mode) -------------------------------------
{
  echo "date: $(date -Is)"
  echo "host: $(hostname)"
  if [ -r /etc/nv_tegra_release ]; then echo "l4t: $(head -n1 /etc/nv_tegra_release)"; fi
  if [ -r /proc/device-tree/model ]; then echo "model: $(tr -d '\0' < /proc/device-tree/model)"; fi
  if command -v nvpmodel >/dev/null 2>&1; then
    echo "nvpmodel: $(nvpmodel -q 2>/dev/null | tr '\n' ' ')"
  else
    echo "nvpmodel: not available"
  fi
  echo "jetson_clocks: $([ "$clocks" -eq 1 ] && echo requested || echo 'not requested (clocks as found)')"
  echo "package: $pkg"
  echo "precision: $precision"
  echo "backend: $backend"
  echo "iters: $iters"
} > "$out/machine.txt"
cat "$out/machine.txt"

tegra_pid=""
cleanup() {
  if [ -n "$tegra_pid" ]; then kill "$tegra_pid" 2>/dev/null || true; wait "$tegra_pid" 2>/dev/null || true; fi
  if [ "$clocks" -eq 1 ] && [ -f "$out/clocks.conf" ]; then
    sudo jetson_clocks --restore "$out/clocks.conf" || echo "bench.sh: could not restore clocks" >&2
  fi
}
trap cleanup EXIT

if [ "$clocks" -eq 1 ]; then
  if ! command -v jetson_clocks >/dev/null 2>&1; then echo "bench.sh: jetson_clocks not found" >&2; exit 2; fi
  sudo jetson_clocks --store "$out/clocks.conf"
  sudo jetson_clocks
fi

# --- engine -------------------------------------------------------------------------------------
if [ "$build" -eq 1 ] && [ "$backend" = trt ]; then
  echo "== rating-edge build $pkg --precision $precision"
  "$cli" build "$pkg" --precision "$precision" --timing-cache "$out/timing.cache"
fi

# --- power run: the package alone, back to back, with tegrastats sampling ------------------------
if command -v tegrastats >/dev/null 2>&1; then
  tegrastats --interval "$interval" > "$out/tegrastats.log" 2>&1 &
  tegra_pid=$!
else
  echo "bench.sh: tegrastats not found; no power figures" >&2
fi
echo "== power run: $iters pairs on $pkg ($backend)"
"$PYTHON" -m rating_edge.bench.tegrastats measure "$pkg" --backend "$backend" --pairs "$iters" --json "$out/power-run.json"
if [ -n "$tegra_pid" ]; then kill "$tegra_pid" 2>/dev/null || true; wait "$tegra_pid" 2>/dev/null || true; tegra_pid=""; fi

# Skip the samples of the first ~2 s (engine deserialisation, warm-up) when the log is long enough.
skip=$(( 2000 / interval ))
# Energy per pair = average power of the samples x scoring time / pairs (scoring time measured by the run).
seconds=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$out/power-run.json")
if [ -s "$out/tegrastats.log" ]; then
  "$PYTHON" -m rating_edge.bench.tegrastats summarize "$out/tegrastats.log" --pairs "$iters" --seconds "$seconds" \
    --interval-ms "$interval" --skip "$skip" --json "$out/power.json" | tee "$out/power.txt"
fi

# --- optional side-by-side comparison (no power sampling) ---------------------------------------
if [ -n "$reference" ]; then
  # `rating-edge bench` times the naive PyTorch baseline and the package on ONNX Runtime, in one run.
  echo "== rating-edge bench $pkg --reference $reference (side by side)"
  "$cli" bench "$pkg" --reference "$reference" --iters "$compare_iters" --json "$out/bench.json"
fi
echo "results in $out/"
