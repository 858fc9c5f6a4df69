#!/usr/bin/env bash
# The device check of softxent's GPU path in one call, under 9 minutes on an H200 (every step has its own
# time limit; they add up to 525 s, the set-up takes about 20 s more):
#   set-up: the peers from wheels in .whl/ (see benchmarks/README.md), the GPU and the versions;
#   tests (100 s): tests/test_triton.py's CUDA tests and its kernel tests of extreme rows, on the GPU;
#   ops (60 s, only when GPU_CHECK_STEPS names it): tests/test_triton_ops.py (the custom ops' CUDA kernels);
#   compile (30 s): registers / spills / shared memory of every default kernel variant (the device's triton);
#   linear (160 s), ce (90 s): benchmarks/cross_entropy_gpu.py without the torch.compile rows;
#   ce-sweep (70 s): the cross-entropy kernel's tile / warps / stages / programs / lanes, at both shapes;
#   linear-sweep (75 s): the linear head's tiles and vocabulary splits, at the first shape.
# GPU_CHECK_STEPS="ce-sweep ce ..." runs only those steps, in that order (default: all but ops, as listed);
# GPU_CHECK_TESTS_K replaces the tests step's pytest -k expression.
# The benchmark rewrites its tables after every row, so a step stopped by its limit keeps what it measured.
# Results: $GPU_CHECK_OUT (default benchmarks/results/gpu_check/), and with GPU_CHECK_PACK=FILE.tgz all of it
# packed into FILE.tgz after every step. GPU_CHECK_DRY=1: the same steps on the CPU (Triton's interpreter,
# tiny shapes, one compiled variant), to check the script itself. Run from anywhere; no network needed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=${GPU_CHECK_DRY:-0}
RES=${GPU_CHECK_OUT:-benchmarks/results/gpu_check}
PACK=${GPU_CHECK_PACK:-}
mkdir -p "$RES"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the tests and the benchmark's --dry-run set it where they need it; the compiler must not
T0=$(date +%s)

pack() { if [ -n "$PACK" ]; then tar czf "$PACK" -C "$RES" . 2>/dev/null || echo "gpu_check: packing failed"; fi; }

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log to $RES/NAME.log, never stop the script
  local t=$1 name=$2; shift 2
  echo "== $name (limit ${t}s, at $(( $(date +%s) - T0 ))s)"
  timeout "$t" "$@" >"$RES/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$RES/$name.log"
  echo "== $name: exit $rc$([ $rc = 124 ] && echo ' (time limit)')"
  pack
}

if [ "$DRY" = 1 ]; then
  echo "gpu_check: dry run on the CPU (GPU_CHECK_DRY=1): the peers as installed here, no wheels"
elif ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sx_site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/sx_site || echo "gpu_check: installing .whl/ failed; the peers will be missing"
else
  echo "gpu_check: no .whl/ folder: the Liger-Kernel and Cut Cross-Entropy rows will say 'not installed'"
fi

{ [ "$DRY" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1; } \
  | tee "$RES/gpu.txt"
"$PY" - <<'PY' 2>&1 | tee -a "$RES/gpu.txt"
import importlib, torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))
print("F.linear_cross_entropy:", hasattr(torch.nn.functional, "linear_cross_entropy"))
for m in ("liger_kernel", "cut_cross_entropy"):
    try:
        mod = importlib.import_module(m); print(m, "imports", getattr(mod, "__version__", ""))
    except Exception as e:  # the real reason, not just "not installed"
        print(m, "does not import:", type(e).__name__, e)
PY
pack

B=benchmarks/cross_entropy_gpu.py
FIRST=8192,2304,256000
STEPS=${GPU_CHECK_STEPS:-tests compile linear ce ce-sweep linear-sweep}
if [ "$DRY" = 1 ]; then
  RUN=(--dry-run)
  FIRST=8,16,72
else
  RUN=(--no-compile --reps 5 --warmup 2)
fi
for s in $STEPS; do
  case "$s:$DRY" in
    tests:1) step 120 tests "$PY" -m pytest -v -p no:cacheprovider tests/test_triton.py -k "lane or float64" ;;
    tests:*) step 100 tests "$PY" -m pytest -v -p no:cacheprovider -rfE --tb=short tests/test_triton.py \
      -k "${GPU_CHECK_TESTS_K:-cuda or lane or float64_is or float64_mean or confident or exp_split or tied or knobs or extreme or nan}" ;;
    ops:1) step 120 ops "$PY" -m pytest -v -p no:cacheprovider tests/test_triton_ops.py -k "fp32 and mean" ;;
    ops:*) step 60 ops "$PY" -m pytest -v -p no:cacheprovider -rfE --tb=short tests/test_triton_ops.py ;;
    compile:1) step 120 compile "$PY" benchmarks/triton_compile.py --out "$RES" --label "dry run" \
      --only "ce_kernel bf16, class indices, plain" ;;
    compile:*) step 30 compile "$PY" benchmarks/triton_compile.py --out "$RES" --jobs 8 \
      --label "the device machine's triton" ;;
    linear:*) step 160 linear "$PY" $B --only linear "${RUN[@]}" --out "$RES/linear" ;;
    ce:*) step 90 ce "$PY" $B --only ce "${RUN[@]}" --out "$RES/ce" ;;
    ce-sweep:*) step 70 ce-sweep "$PY" $B --only ce-sweep "${RUN[@]}" --out "$RES/ce-sweep" ;;
    linear-sweep:*) step 75 linear-sweep "$PY" $B --only linear-sweep --shape "$FIRST" "${RUN[@]}" \
      --out "$RES/linear-sweep" ;;
    *) echo "gpu_check: unknown step '$s' (steps: tests ops compile linear ce ce-sweep linear-sweep)" ;;
  esac
done
echo "gpu_check: done in $(( $(date +%s) - T0 )) s; tables under $RES"
