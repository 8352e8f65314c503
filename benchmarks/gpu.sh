#!/bin/bash
# The GPU figures (issues 14 and 16), for the device machine of the project's tool library (one
# H200; JAX and PyTorch installed, no TensorFlow, no network), under 10 minutes.  Not yet run on
# a GPU: no session that wrote it was lent a device.  `SMOKE=1 bash benchmarks/gpu.sh` runs the
# same commands with tiny sizes on a CPU (checked on the project's CPU box) so the script is
# known to work before a device is spent on it.
#
# Prepare here (the device has no network), then run it there in one call:
#
#   .venv/bin/pip download --no-deps -d benchmarks/wheels keras h5py pyBigWig pyfaidx tangermeme \
#       namex optree rich ml_dtypes absl-py markdown-it-py mdurl pygments jsonschema \
#       jsonschema-specifications referencing rpds-py attrs tqdm
#   run: bash benchmarks/gpu.sh   (carry: benchmarks/wheels)
#
# Measures, with the JAX backend (XLA always on):
#   - training examples/s and peak device memory: the ChromBPNet-shaped model (64 x 8) and
#     ChromBPNet's 512-filter main model, float32 and mixed bfloat16, batches from memory and
#     from bpflow's HDF5 pipeline (benchmarks/train_throughput.py);
#   - prediction regions/s (BED -> HDF5 -> bigWig), 64 and 512 filters (predict_throughput.py);
#   - contribution (DeepSHAP) regions/s against tangermeme on the same GPU, 64 and 512 filters
#     (contributions.py).
# Writes $OUT/machine.txt, train.{json,md}, predict_{64,512}.json, contributions_{64,512}.{json,md}.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export KERAS_BACKEND=jax
if [ "${SMOKE:-0}" = 1 ]; then
    # tiny sizes: only checks that every command runs
    TRAIN="--samples 64 --steps 2 --bias-steps 2 --warmup 1 --loader-steps 2"
    PREDICT="--regions 16 --batch-size 8 --chrom-lengths 200000"
    CONTRIB="--regions 2 --references 2 --batch-size 1 --reference-batch-size 4"
    DEVICE=cpu
    MODELS="residual"  # the 512-filter model trains for minutes per step on a CPU
    python -c "import tangermeme" 2>/dev/null && IMPLS="bpflow-jax tangermeme" || IMPLS="bpflow-jax"
else
    if [ -d benchmarks/wheels ]; then
        python -m pip install -q --no-index --find-links benchmarks/wheels keras h5py pyBigWig pyfaidx tangermeme \
            jsonschema tqdm
        python -m pip install -q --no-index --no-deps -e .
    fi
    TRAIN="--samples 2048 --steps 40 --warmup 5"
    PREDICT="--regions 4096 --batch-size 128 --repeat 2"
    CONTRIB="--regions 512 --batch-size 32 --reference-batch-size 128"
    DEVICE=cuda
    MODELS="residual main512"
    IMPLS="bpflow-jax tangermeme"
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    python -c "import jax, keras; print(jax.__version__, keras.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
B=benchmarks
# training: float32, then mixed bfloat16 (its rows say precision mixed_bfloat16)
python $B/train_throughput.py --backends jax --models $MODELS --modes memory pipeline $TRAIN \
    --jit-compile true --workdir /tmp/gpu-train --json "$OUT/train_float32.json" | tee "$OUT/train.md"
python $B/train_throughput.py --backends jax --models $MODELS --modes memory $TRAIN \
    --jit-compile true --mixed-precision bfloat16 --workdir /tmp/gpu-train --json "$OUT/train_bfloat16.json" \
    | tee -a "$OUT/train.md"
for f in 64 512; do
    python $B/predict_throughput.py --filters $f $PREDICT --json "$OUT/predict_$f.json"
    python $B/contributions.py --workdir /tmp/gpu-cb-$f --filters $f $CONTRIB --impls $IMPLS \
        --reference-device $DEVICE --json "$OUT/contributions_$f.json" --markdown "$OUT/contributions_$f.md"
done
echo "done: $OUT"
