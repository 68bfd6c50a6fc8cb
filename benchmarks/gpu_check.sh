#!/usr/bin/env bash
# The GPU check: every figure a lent NVIDIA GPU should give, from one command, in under 8
# minutes, written under OUT_DIR (BENCHMARKS.md, "Running the GPU check").
#
#   benchmarks/gpu_check.sh OUT_DIR           on a machine with an NVIDIA GPU
#   benchmarks/gpu_check.sh --smoke OUT_DIR   any machine: every piece at tiny sizes on the CPU
#
# Pieces, most important first (if time runs out, the first ones are done), each under its
# own time limit (coreutils timeout), each with its log in OUT_DIR/logs/PIECE.log:
#   env         GPU, driver, CUDA, torch, CPU                    -> env.json
#   cuda_tests  the tests that exercise CUDA (pytest -k cuda)    -> cuda_tests.txt
#   grid        SimCLR ResNet-50/18 at 224/96 px, bf16 + channels-last, no compile
#                                                                -> throughput.jsonl
#   largest     the largest ResNet-50 batch at 224 px that fits  -> largest_batch.jsonl
#   augment     make_pairs on the device                         -> augment.json
#   decode      PIL (1 process, a pool), decode_jpeg CPU and GPU -> decode.json
#   lightly     side by side with lightly + PIL on the GPU       -> vs_lightly.json
#   compile     the grid with torch.compile                      -> throughput_compile.jsonl
# then OUT_DIR/summary.md (tables for BENCHMARKS.md) and OUT_DIR/pieces.tsv (each piece's
# status, seconds and limit). The compile grid runs last although it belongs to the grid: its
# compilation time is the least predictable, and it must not take the others' time. A compile
# that fails or runs out of time is recorded (its rows, an error row, or "timeout" in
# pieces.tsv) and does not fail the check.
#
# Time limits on an H100/H200 (seconds, with what they cover; estimates, since no GPU has run
# this yet; the 16 CPU cores of the lent machine make the CPU parts short):
#   env 15 (one torch import, nvidia-smi)
#   + cuda_tests 45 (collecting tests/engine, ~10 tests)
#   + grid 80 (matmul peaks, 8192-square products for 3 precisions x 2 s; 4 configurations x
#     8 s plus a warm-up step and a FLOP count each)
#   + largest 60 (about 6 trials of one step each, batches in multiples of 128 from 512)
#   + augment 20 (2 settings, 5 timed runs each)
#   + decode 35 (512 JPEGs written; PIL once and in a pool, decode_jpeg on CPU and GPU, a
#     warm-up and 2 timed runs each)
#   + lightly 105 (2048 JPEGs written, the cache built, 3 training runs of 10 steps, lightly's
#     16 DataLoader workers started twice)
#   + compile 100 (ResNet-50 at 224 px first; inductor compiles each configuration's forward
#     and backward, expected to take about a minute each)
#   = 460 s, under the 470 s the whole check is held to; summary.md takes a second.
#
# Exits 0 when every piece ran; otherwise 1, naming the pieces that did not. Nothing here
# uses the network. Python: $GPU_CHECK_PYTHON, else .venv/bin/python, else python3.
set -uo pipefail

usage() {
    echo "usage: benchmarks/gpu_check.sh [--smoke] OUT_DIR" >&2
    exit 2
}
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
    SMOKE=1
    shift
fi
[ $# -eq 1 ] && [ -n "$1" ] || usage
case "$1" in -*) usage ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1/logs" "$1/results" || exit 2
OUT=$(cd "$1" && pwd)
cd "$ROOT" || exit 2
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1
# Nothing may reach the network (the lent machine has none): no hub downloads, no telemetry.
export HF_HUB_OFFLINE=1 TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE=0
# A rerun into the same folder starts afresh: the files this check writes, and only those.
for f in pieces.tsv env.json cuda_tests.txt throughput.jsonl largest_batch.jsonl augment.json \
    decode.json vs_lightly.json throughput_compile.jsonl summary.md; do rm -f "$OUT/$f"; done
printf 'piece\tstatus\tseconds\tlimit_s\n' >"$OUT/pieces.tsv"

if [ "$SMOKE" = 1 ]; then
    TOTAL=240
    export CUDA_VISIBLE_DEVICES=""  # the smoke measures the CPU path, even on a GPU machine
    export OMP_NUM_THREADS=1
    DEVICE=cpu
else
    TOTAL=470
    DEVICE=cuda
fi
START=$SECONDS
FAILED=()

# piece NAME LIMIT_S MAY_TIME_OUT CMD...: run CMD under min(LIMIT_S, time left), log it.
piece() {
    local name=$1 limit=$2 may_time_out=$3
    shift 3
    local left=$((TOTAL - (SECONDS - START)))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        printf '%s\tskipped (out of time)\t0\t%s\n' "$name" "$limit" >>"$OUT/pieces.tsv"
        echo "== $name: skipped, the check's $TOTAL s are spent"
        FAILED+=("$name")
        return
    fi
    echo "== $name (limit ${limit} s): $*"
    local began=$SECONDS rc status
    timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timeout" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - began))" "$limit" \
        >>"$OUT/pieces.tsv"
    tail -n 12 "$OUT/logs/$name.log" | sed 's/^/   /'
    echo "== $name: $status in $((SECONDS - began)) s"
    if [ "$rc" != 0 ] && ! { [ "$may_time_out" = yes ] && [ "$status" = timeout ]; }; then
        FAILED+=("$name")
    fi
}

if [ "$SMOKE" = 1 ]; then
    TESTS=(tests/engine/test_augment.py)
    # ResNet-18 only: a ResNet-50 step takes seconds on a small CPU, and its code path is
    # the same. torch.compile with the eager backend: the graphs are captured, no code is
    # generated (inductor needs minutes on 2 cores).
    # One PyTorch thread: on a shared 2-core machine, two OpenMP threads that wait for each
    # other make a tiny step many times slower.
    GRID=(--backbones resnet18 --sizes 32 --batch 4 --seconds 0 --peak-n 512
          --peak-seconds 0.3 --threads 1)
    LARGEST=(--largest-backbone resnet18 --largest-size 32 --largest-start 4
             --largest-limit 8 --largest-step 2 --threads 1)
    AUGMENT=(--batch 8 --settings 37:32 --repeats 2 --threads 1)
    DECODE=(--n 16 --min-px 64 --max-px 96 --size 32 --repeats 1 --workers 2 --threads 1)
    LIGHTLY=(--size 32 --batch 8 --steps 2 --warmup 1 --images 32 --source-px 40
             --workers 1 --threads 1)
    COMPILE=(--backbones resnet18 --sizes 32 --batch 4 --seconds 0 --peak-n 512
             --peak-seconds 0.3 --compile-backend eager --threads 1)
    LIMITS=(env 30 cuda_tests 45 grid 45 largest 45 augment 30 decode 30 lightly 45
            compile 45)
else
    TESTS=(tests/engine)
    GRID=(--backbones resnet50 resnet18 --sizes 224 96 --seconds 8 --peak-n 8192
          --peak-seconds 2)
    LARGEST=(--largest-size 224 --largest-start 512 --largest-limit 8192 --largest-step 128)
    AUGMENT=(--batch 256 --settings 256:224 110:96 --repeats 5)
    DECODE=(--n 512 --min-px 300 --max-px 500 --size 224 --repeats 2)
    LIGHTLY=(--size 224 --batch 256 --steps 8 --warmup 2 --images 2048 --source-px 256
             --backbone resnet50 --standard-stem --require-lightly)
    COMPILE=(--backbones resnet50 resnet18 --sizes 224 96 --seconds 5 --peak-seconds 1)
    LIMITS=(env 15 cuda_tests 45 grid 80 largest 60 augment 20 decode 35 lightly 105
            compile 100)
fi
declare -A LIMIT
for ((i = 0; i < ${#LIMITS[@]}; i += 2)); do LIMIT[${LIMITS[i]}]=${LIMITS[i + 1]}; done

echo "GPU check$([ "$SMOKE" = 1 ] && echo ' (smoke, CPU)') -> $OUT; python: $PY"
piece env "${LIMIT[env]}" no "$PY" benchmarks/gpu_check.py env "$OUT/env.json"
if [ "$SMOKE" = 0 ] && ! grep -q '"cuda_available": true' "$OUT/env.json" 2>/dev/null; then
    echo "GPU check: PyTorch finds no CUDA GPU here (see $OUT/env.json and logs/env.log);" \
        "the check needs one. benchmarks/gpu_check.sh --smoke OUT_DIR runs it on the CPU." >&2
    exit 1
fi
piece cuda_tests "${LIMIT[cuda_tests]}" no \
    "$PY" benchmarks/gpu_check.py tests "$OUT/cuda_tests.txt" -- -q -m "not slow" \
    -p no:cacheprovider -rs --basetemp "$OUT/pytest-tmp" -k cuda "${TESTS[@]}"
piece grid "${LIMIT[grid]}" no "$PY" benchmarks/bench_throughput.py --device "$DEVICE" \
    --methods simclr "${GRID[@]}" --keep-going --jsonl "$OUT/throughput.jsonl" \
    --results "$OUT/results"
piece largest "${LIMIT[largest]}" no "$PY" benchmarks/bench_throughput.py --device "$DEVICE" \
    --skip-grid --largest-batch "${LARGEST[@]}" --jsonl "$OUT/largest_batch.jsonl" \
    --results "$OUT/results"
piece augment "${LIMIT[augment]}" no "$PY" benchmarks/bench_augment.py --device "$DEVICE" \
    "${AUGMENT[@]}" --json "$OUT/augment.json" --results "$OUT/results"
piece decode "${LIMIT[decode]}" no "$PY" benchmarks/bench_decode.py --device "$DEVICE" \
    "${DECODE[@]}" --json "$OUT/decode.json"
piece lightly "${LIMIT[lightly]}" no "$PY" benchmarks/bench_vs_lightly.py --device "$DEVICE" \
    --methods simclr --rounds 1 --no-fp32 "${LIGHTLY[@]}" --json "$OUT/vs_lightly.json" \
    --results "$OUT/results"
piece compile "${LIMIT[compile]}" yes "$PY" benchmarks/bench_throughput.py --device "$DEVICE" \
    --methods simclr "${COMPILE[@]}" --compile --keep-going \
    --jsonl "$OUT/throughput_compile.jsonl" --results "$OUT/results"

"$PY" benchmarks/gpu_check.py summary "$OUT" >"$OUT/logs/summary.log" 2>&1 \
    || { echo "== summary: failed"; cat "$OUT/logs/summary.log"; FAILED+=(summary); }
rm -rf "$OUT/pytest-tmp"
echo "GPU check done in $((SECONDS - START)) s; figures in $OUT (summary.md)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "GPU check: these pieces did not run: ${FAILED[*]} (see $OUT/logs/)" >&2
    exit 1
fi
exit 0
