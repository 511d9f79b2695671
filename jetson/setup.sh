#!/usr/bin/env bash
# Set up rating-edge on a Jetson: find the JetPack/L4T release, TensorRT, CUDA and Python versions, refuse
# what the toolkit does not support, then install the runtime extra and cuda-python (the CUDA buffer module
# TensorRT 10's own samples use) into a virtualenv that can also see JetPack's own TensorRT bindings.
# Supported: JetPack 6.1 or newer 6.x (L4T r36.4+: TensorRT 10.3, Python 3.10) and JetPack 7 (L4T r38;
# TensorRT 11 needs JetPack 7), i.e. TensorRT >= 10 and Python >= 3.10. Not supported: JetPack 4 and 5
# (TensorRT 8, Python 3.6/3.8) and JetPack 6.0 (L4T r36.3, TensorRT 8.6).
#
# usage: jetson/setup.sh [--venv DIR] [--dry-run] [--force]
#   --venv DIR   virtualenv to create/use (default: <repo>/.venv)
#   --dry-run    print what was found and what would be installed; install nothing
#   --force      continue on a machine that does not look like a Jetson
# Detection can be overridden (for other L4T layouts and for tests):
#   L4T_RELEASE_FILE (default /etc/nv_tegra_release), TRT_VERSION, CUDA_VERSION, PY_VERSION (python3's X.Y)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv="$repo/.venv"
dry_run=0
force=0

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# --- L4T / JetPack -------------------------------------------------------------------------------
release_file=${L4T_RELEASE_FILE:-/etc/nv_tegra_release}
l4t=""
if [ -r "$release_file" ]; then
  # "# R36 (release), REVISION: 3.0, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
  major=$(sed -n 's/^# R\([0-9][0-9]*\) (release).*/\1/p' "$release_file" | head -n1)
  rev=$(sed -n 's/.*REVISION: \([0-9][0-9.]*\).*/\1/p' "$release_file" | head -n1)
  [ -n "$major" ] && l4t="$major.${rev:-0}"
fi
if [ -z "$l4t" ] && command -v dpkg-query >/dev/null 2>&1; then
  l4t=$(dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null | cut -d- -f1 || true)
fi
jetpack="unknown"
case "$l4t" in
  32.*) jetpack="4" ;;
  35.*) jetpack="5" ;;
  36.*) jetpack="6" ;;
  38.*) jetpack="7" ;;
esac
if [ -z "$l4t" ]; then
  if [ "$force" -ne 1 ]; then
    say "No L4T release found ($release_file missing, no nvidia-l4t-core package): this is not a Jetson."
    say "On a desktop GPU install with: pip install -e '${repo}[runtime,tensorrt]'. Use --force to continue here."
    exit 1
  fi
  warn "not a Jetson (no L4T release); continuing because of --force"
fi

# --- TensorRT and CUDA ---------------------------------------------------------------------------
trt=${TRT_VERSION:-}
if [ -z "$trt" ]; then
  trt=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)
fi
if [ -z "$trt" ] && command -v dpkg-query >/dev/null 2>&1; then
  for p in libnvinfer10 libnvinfer8 tensorrt; do
    trt=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null | cut -d- -f1 || true)
    [ -n "$trt" ] && break
  done
fi
cuda=${CUDA_VERSION:-}
if [ -z "$cuda" ] && [ -r /usr/local/cuda/version.json ]; then
  cuda=$(python3 -c 'import json; print(json.load(open("/usr/local/cuda/version.json"))["cuda"]["version"])' 2>/dev/null || true)
fi
if [ -z "$cuda" ] && [ -r /usr/local/cuda/version.txt ]; then
  cuda=$(sed -n 's/^CUDA Version \([0-9.]*\).*/\1/p' /usr/local/cuda/version.txt)
fi
if [ -z "$cuda" ]; then
  nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [ -x "$nvcc_bin" ]; then
    cuda=$("$nvcc_bin" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  fi
fi
trt_major=${trt%%.*}
cuda_major=${cuda%%.*}
py=${PY_VERSION:-}
if [ -z "$py" ]; then
  py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
fi
py_major=${py%%.*}
py_minor=${py#*.}

# --- what is supported --------------------------------------------------------------------------
# The code requires Python >= 3.10 (pyproject) and refuses TensorRT < 10 (`rating-edge build`): JetPack 6.1+.
unsupported=()
case "$jetpack" in
  4|5) unsupported+=("JetPack $jetpack is not supported: use JetPack 6.1 or newer (TensorRT 10.3, Python 3.10) or JetPack 7") ;;
  6)
    l4t_rev=${l4t#36.}; l4t_rev=${l4t_rev%%.*}
    if [ "$l4t_rev" -lt 4 ] 2>/dev/null; then
      unsupported+=("JetPack 6.0 (L4T $l4t) is not supported: it ships TensorRT 8.6; upgrade to JetPack 6.1 or newer (L4T 36.4+, TensorRT 10.3)")
    fi ;;
esac
if [ -n "$trt_major" ] && [ "$trt_major" -lt 10 ] 2>/dev/null; then
  unsupported+=("TensorRT $trt is not supported: rating-edge needs TensorRT 10 or newer (JetPack 6.1+)")
fi
if [ -z "$py" ]; then
  unsupported+=("python3 not found: rating-edge needs Python >= 3.10")
elif [ "$py_major" -lt 3 ] 2>/dev/null || { [ "$py_major" -eq 3 ] && [ "$py_minor" -lt 10 ]; } 2>/dev/null; then
  unsupported+=("Python $py is not supported: rating-edge needs Python >= 3.10 (JetPack 6.1+ ships 3.10)")
fi

# --- what fits ----------------------------------------------------------------------------------
# TensorRT 10's own Python samples use cuda-python; the major version follows CUDA's.
if [ -n "$trt_major" ]; then
  buffers="cuda-python"
  if [ -n "$cuda_major" ]; then
    buffer_pkg="cuda-python>=${cuda_major}.0,<$((cuda_major + 1)).0"
  else
    buffer_pkg="cuda-python"
  fi
else
  buffers="none (TensorRT not found)"
  buffer_pkg=""
fi

say "rating-edge Jetson setup"
say "  L4T release      : ${l4t:-not found}  (JetPack $jetpack)"
say "  TensorRT         : ${trt:-not found}"
say "  CUDA             : ${cuda:-not found}"
say "  Python           : ${py:-not found}"
say "  buffer module    : $buffers"
say "  virtualenv       : $venv (with system site-packages, for JetPack's TensorRT bindings)"
say "  install          : -e ${repo}[runtime] ${buffer_pkg:+$buffer_pkg}"
if [ -z "$trt" ]; then
  warn "TensorRT not found: install it with 'sudo apt install nvidia-tensorrt python3-libnvinfer' (JetPack)"
  warn "without it the runtime runs on ONNX Runtime (CPU) only"
fi
if [ ${#unsupported[@]} -gt 0 ]; then
  for m in "${unsupported[@]}"; do say "error: $m"; done
  say "nothing installed (supported: JetPack 6.1+ or 7, TensorRT >= 10, Python >= 3.10; see jetson/README.md)"
  exit 1
fi

if [ "$dry_run" -eq 1 ]; then
  say "dry run: nothing installed"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "${repo}[runtime]"
if [ -n "$buffer_pkg" ]; then
  "$venv/bin/python" -m pip install -q "$buffer_pkg"
fi
if "$venv/bin/python" -c 'import tensorrt' 2>/dev/null; then
  say "tensorrt imports in $venv: yes"
else
  warn "tensorrt does not import in $venv; the TensorRT backend is unavailable until it does"
fi
say "done. next: $venv/bin/rating-edge build PKG --precision int8   (then jetson/bench.sh PKG)"
