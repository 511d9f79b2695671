#!/usr/bin/env bash
# The GPU check as one prepared script for a bare GPU machine (issue 18): install what is missing, then
# build, verify and time TensorRT engines for the tiny and the paper preset, with time limits, writing
# logs and a JSON summary to OUT.
#
#   tests/gpu/device_check.sh [OUT]        (OUT defaults to $OUT, else /tmp/rating_gpu_out)
#
# Installs: TensorRT, cuda-python and onnxconverter-common from wheels carried in ./.whl when present
# (GPU machines without network), else from the package index. torch, onnx, onnxruntime, OpenCV, typer,
# rich, safetensors and scikit-learn are expected on the GPU image (they are on CUDA PyTorch images);
# the project itself is used from this checkout (PYTHONPATH), not installed.
# Exit status: 0 checks ran (see summary.json for pass/fail), 3 TensorRT not importable, 4 no GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-${OUT:-/tmp/rating_gpu_out}}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LOG="$OUT/device_check.log"
log() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
TINY_S="${TINY_TIMEOUT:-240}"
PAPER_S="${PAPER_TIMEOUT:-420}"

log "machine: $(uname -m), $($PY --version 2>&1)"
if ! nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1; then
  log "no NVIDIA GPU here (nvidia-smi failed)"
  echo '{"status": "no-gpu"}' > "$OUT/summary.json"
  exit 4
fi
head -15 "$OUT/nvidia-smi.txt" | tee -a "$LOG"

SITE=/tmp/rating_gpu_site
if ls .whl/*.whl >/dev/null 2>&1; then
  log "installing carried wheels from .whl"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl >> "$LOG" 2>&1
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
elif ! $PY -c "import tensorrt" 2>/dev/null; then
  log "installing tensorrt, cuda-python, onnxconverter-common from the index"
  $PY -m pip install -q 'tensorrt>=10' 'cuda-python>=12' 'onnxconverter-common>=1.14' >> "$LOG" 2>&1 \
    || log "pip install failed (no network?): carry the wheels in .whl"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
if ! $PY -c "import tensorrt as t; print('TensorRT', t.__version__)" 2>&1 | tee -a "$LOG" | grep -q '^TensorRT'; then
  log "TensorRT is not importable: the engine checks cannot run"
  echo '{"status": "no-tensorrt"}' > "$OUT/summary.json"
  exit 3
fi
$PY -c "import torch, onnx, onnxruntime, cv2; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'onnx', onnx.__version__, 'ort', onnxruntime.__version__)" 2>&1 | tee -a "$LOG"

status=0
log "tiny preset (limit ${TINY_S} s)"
timeout "$TINY_S" $PY tests/gpu/run_gpu_checks.py --preset tiny --work /tmp/rating_gpu_tiny \
  --json "$OUT/tiny.json" > "$OUT/tiny.log" 2>&1 || { status=$?; log "tiny preset failed or timed out ($status)"; }
tail -25 "$OUT/tiny.log" | tee -a "$LOG"
log "paper preset (limit ${PAPER_S} s)"
timeout "$PAPER_S" $PY tests/gpu/run_gpu_checks.py --preset paper --work /tmp/rating_gpu_paper \
  --json "$OUT/paper.json" > "$OUT/paper.log" 2>&1 || { status=$?; log "paper preset failed or timed out ($status)"; }
tail -25 "$OUT/paper.log" | tee -a "$LOG"

$PY - "$OUT" <<'PYEOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {"status": "ran"}
for name in ("tiny", "paper"):
    p = out / f"{name}.json"
    summary[name] = json.loads(p.read_text()) if p.exists() else {"status": "no result (see %s.log)" % name}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: (v if k == "status" else sorted(v)[:8]) for k, v in summary.items()}))
PYEOF
exit 0
