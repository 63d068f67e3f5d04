#!/usr/bin/env bash
# Every GPU figure of docs/results/performance.md in one run, each step under its own time limit, so that one that
# hangs cannot take the others with it. Run from the repository root on a machine with CUDA, Triton and trl, with
# ../shared/tokenizers beside the checkout (llama3 and qwen3):
#     OUT=gpu-results bash benchmarks/gpu.sh
# Tables go to $OUT/*.md and the scaling curve to $OUT/scaling-gpu.png. STEPS="tests.txt sweep.md" runs only the
# steps named (default: all).
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRL_EXPERIMENTAL_SILENCE=1
python=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a limit, its output to the terminal and to $out/NAME
    local name=$1 seconds=$2
    shift 2
    [[ -z ${STEPS:-} || " $STEPS " == *" $name "* ]] || return 0
    echo "== $name (limit ${seconds}s): $*"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

step env.txt 30 bash -c "nvidia-smi; $python -c 'import torch, triton, trl, transformers as t; \
print(torch.__version__, triton.__version__, trl.__version__, t.__version__, torch.cuda.get_device_name())'"
step tests.txt 90 "$python" -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_losses.py
step losses.md 180 "$python" -m benchmarks.bench_losses --device cuda
step crossvocab.md 170 "$python" -m benchmarks.bench_crossvocab --device cuda --pair llama3,qwen3 --shape 4,2048 \
    --no-stages --trl-repeats 2
step scaling.md 150 "$python" -m benchmarks.bench_scaling --device cuda --plot "$out/scaling-gpu.png"
step sweep.md 120 "$python" -m benchmarks.sweep_triton
