#!/usr/bin/env bash
# The device check of softxent's GPU path, in one go (< 8 minutes on an H200): versions, the CUDA tests,
# the compile figures, the GPU benchmark part by part (each part's tables are written as soon as it ends,
# so a timeout keeps the earlier ones). Run from the repository root, with the peers' wheels in .whl/
# (see benchmarks/README.md); no network needed. Results: benchmarks/results/gpu_check/ (or $OUT if set).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RES=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$RES"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sx_site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/sx_site || echo "gpu_check: installing .whl/ failed; the peers will be missing"
else
  echo "gpu_check: no .whl/ folder: Liger-Kernel and Cut Cross-Entropy rows will say 'not installed'"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$RES/gpu.txt"
"$PY" - <<'PY' 2>&1 | tee -a "$RES/gpu.txt"
import importlib, torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
for m in ("liger_kernel", "cut_cross_entropy"):
    try:
        importlib.import_module(m); print(m, "imports")
    except Exception as e:  # the real reason, not just "not installed"
        print(m, "does not import:", type(e).__name__, e)
PY

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log to $RES/NAME.log, never stop the script
  local t=$1 name=$2; shift 2
  echo "== $name (limit ${t}s)"
  timeout "$t" "$@" 2>&1 | tee "$RES/$name.log" | tail -n 40
  echo "== $name: exit ${PIPESTATUS[0]}"
}

step 150 tests "$PY" -m pytest -q -p no:cacheprovider -x tests/test_triton.py tests/test_triton_ops.py -k "cuda or op"
step 60 compile "$PY" benchmarks/triton_compile.py --out "$RES" --label "on the device machine's triton"
step 150 bench_linear "$PY" benchmarks/cross_entropy_gpu.py --only linear --no-compile --out "$RES/linear"
step 90 bench_ce "$PY" benchmarks/cross_entropy_gpu.py --only ce --no-compile --out "$RES/ce"
echo "gpu_check: done; tables under $RES"
