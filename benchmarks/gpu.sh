#!/bin/bash
# The GPU figures (issues 14 and 16), for the device machine of the project's tool library (one
# H200; JAX and PyTorch installed, no TensorFlow, no network).  Untested so far: no session that
# wrote it was lent a device.  Prepare here, then run it there in one call:
#
#   .venv/bin/pip download --no-deps -d benchmarks/wheels keras h5py pyBigWig tangermeme \
#       namex optree rich ml_dtypes absl-py markdown-it-py mdurl pygments
#   run: bash benchmarks/gpu.sh   (carry: benchmarks/wheels)
#
# Writes $OUT/machine.txt and $OUT/contributions.json (bpflow under JAX on the GPU against
# tangermeme on the same GPU, ChromBPNet-shaped model, 20 references).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python -m pip install -q --no-index --find-links benchmarks/wheels keras h5py tangermeme
python -m pip install -q --no-index --no-deps -e .
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c "import jax; print(jax.devices())"; } \
    > "$OUT/machine.txt" 2>&1
KERAS_BACKEND=jax python benchmarks/contributions.py --workdir /tmp/cb --regions 512 --batch-size 32 \
    --impls bpflow-jax tangermeme --reference-device cuda --reference-batch-size 128 \
    --json "$OUT/contributions.json" --markdown "$OUT/contributions.md"
