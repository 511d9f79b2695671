#!/usr/bin/env bash
# A CPU Triton Inference Server for the tests: the tritonserver binary bundled in nvidia-pytriton
# (Python backend only), in its own virtualenv made with the system Python 3.11, because the backend
# stub links the OS Python library (under another Python build it fails with
# "'_thread.RLock' object has no attribute '_recursion_count'"), and with numpy<2 (with numpy 2.x the
# responses come back empty). The toolkit's runtime dependencies (numpy, OpenCV, ONNX Runtime,
# jsonschema) go into the same venv, because the
# `python` repository form runs rating-edge's own runner inside the server. Idempotent: a finished
# set-up (same SETUP_ID) is kept and reused.
# Usage: deploy/triton/setup-test-server.sh [DIR]   (default: $RATING_EDGE_TRITON_HOME or ~/.cache/rating-edge/triton)
set -euo pipefail
DIR="${1:-${RATING_EDGE_TRITON_HOME:-$HOME/.cache/rating-edge/triton}}"
PY=/usr/bin/python3.11
SETUP_ID="pytriton-0.7.0+ort+opencv+jsonschema-2"
if [ "$(cat "$DIR/.ready" 2>/dev/null)" = "$SETUP_ID" ]; then echo "$DIR"; exit 0; fi
if [ ! -x "$PY" ]; then echo "no $PY: the Triton test server needs the system Python 3.11" >&2; exit 1; fi
mkdir -p "$DIR"
"$PY" -m venv "$DIR/venv"
"$DIR/venv/bin/python" -m pip install -q --upgrade pip >&2
"$DIR/venv/bin/python" -m pip install -q 'nvidia-pytriton==0.7.0' 'numpy<2' onnxruntime \
  'opencv-python-headless<4.12' 'jsonschema>=4.18' >&2
PT=$("$DIR/venv/bin/python" -c 'import pytriton, os; print(os.path.dirname(pytriton.__file__))')
test -x "$PT/tritonserver/bin/tritonserver"
mkdir -p "$DIR/backends/python"
cp -r "$PT/tritonserver/backends/python/." "$DIR/backends/python/" 2>/dev/null || true
cp "$PT/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" "$DIR/backends/python/"
ln -sfn "$PT/tritonserver" "$DIR/tritonserver"
echo "$SETUP_ID" > "$DIR/.ready"
echo "$DIR"
