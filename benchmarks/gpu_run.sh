#!/usr/bin/env bash
# One-shot GPU check for issue 12 (fused Triton kernels): GPU tests, then benchmarks/gpu_kernels.py.
#
# On a lent GPU (see ../shared/gpu.md), from the checkout's root, after ../shared/tools/gpu-wheels.sh put the
# missing wheels into .whl/, call the device tool `run` with carry [".whl"], timeout_s 600 and one of
#     bash benchmarks/gpu_run.sh          # tests + `gpu_kernels.py --quick`, fits one 10-minute call
#     bash benchmarks/gpu_run.sh tests    # only the tests (about 3 min)
#     bash benchmarks/gpu_run.sh bench    # only the full benchmark (up to 8 min on one H100)
# Logs go to $OUT (the device tool's folder) or ./gpu_out: gpu_tests.log, triton_tests.log, gpu_kernels.log.
# The last line of gpu_kernels.log is the `gpu_kernels device=...` line for benchmarks/RESULTS.md.
set -uo pipefail
mode="${1:-all}"
case "$mode" in all | tests | bench) ;; *) echo "usage: gpu_run.sh [all|tests|bench]" >&2; exit 2 ;; esac
out="${OUT:-$PWD/gpu_out}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null \
        || { echo "gpu_run: installing .whl/*.whl failed" >&2; exit 1; }
fi
PYTHONPATH="/tmp/site:$(ls -d "$PWD"/packages/*/src | tr '\n' ':')${PYTHONPATH:-}"
export PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee -a "$out/device.txt" || exit 1
if [ "$mode" != bench ]; then
    # every gpu-marked test, then the Triton kernel tests compiled for the GPU (the CPU runs them interpreted)
    timeout 120 python3 -m pytest -m gpu packages -q -o filterwarnings=default -p no:cacheprovider --tb=short \
        2>&1 | tee "$out/gpu_tests.log"
    timeout 90 python3 -m pytest packages/qvgen-quant/tests/test_triton_kernels.py -q -o filterwarnings=default \
        -p no:cacheprovider --tb=short 2>&1 | tee "$out/triton_tests.log"
fi
if [ "$mode" = all ]; then
    timeout 330 python3 benchmarks/gpu_kernels.py --quick 2>&1 | tee "$out/gpu_kernels.log"
elif [ "$mode" = bench ]; then
    timeout 560 python3 benchmarks/gpu_kernels.py 2>&1 | tee "$out/gpu_kernels.log"
fi
echo "gpu_run: $mode done (logs in $out)"
