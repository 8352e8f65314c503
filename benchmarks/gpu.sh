#!/bin/bash
# The GPU figures (issues 14 and 16), for the device machine of the project's tool library (one
# H200; JAX and PyTorch installed, no TensorFlow, no network), under 10 minutes.  First run on an
# H200 on 2026-12-04 (benchmarks/README.md, section gpu).  `SMOKE=1 bash benchmarks/gpu.sh` runs the
# same commands with tiny sizes on a CPU (checked on the project's CPU box) so the script is
# known to work before a device is spent on it.
#
# Prepare here (the device has no network and its python3 is 3.12 with JAX, PyTorch, h5py,
# numba, pandas, matplotlib, scipy), then run it there in one call:
#
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       keras==3.15.1 namex optree pyBigWig pyfaidx tangermeme figwig memelite jsonschema \
#       jsonschema-specifications referencing rpds-py
#   run: bash benchmarks/gpu.sh   (carry: .whl benchmarks/gpu-data; timeout_s 590)
#
# Each part has its own time limit (PART_LIMITS), so one slow part cannot starve the rest, and
# everything lands in one tarball plus the log: the device returns at most 8 files.
# Measures, with the JAX backend (XLA always on):
#   - training examples/s and peak device memory: the ChromBPNet-shaped model (64 x 8) and
#     ChromBPNet's 512-filter main model, float32 and mixed bfloat16, batches from memory and
#     from bpflow's HDF5 pipeline (benchmarks/train_throughput.py);
#   - prediction regions/s (BED -> HDF5 -> bigWig), 64 and 512 filters (predict_throughput.py);
#   - contribution (DeepSHAP) regions/s against tangermeme on the same GPU, 64 and 512 filters
#     (contributions.py).
#   - the combined stage's wall time, bpflow's default schedule against the joint schedule
#     (issue 17), on a quality-suite setting packed by combined_walltime.py (carry benchmarks/gpu-data):
#       .venv/bin/python benchmarks/combined_walltime.py pack /work/suite/other-motifs \
#           benchmarks/gpu-data/other-motifs
# PARTS picks what runs (default: all of "train predict contributions combined"); the first three
# kinds were measured on 2026-12-04 and fill one call, so a session runs PARTS=combined alone.
# Writes $OUT/gpu-results.tar.gz: machine.txt, parts.txt (each part's wall time and exit status),
# train_{float32,bfloat16}.json, predict_{64,512}.json, contributions_{64,512}.{json,md},
# combined.json and combined_*.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
RES=/tmp/gpu-results
rm -rf "$RES" && mkdir -p "$OUT" "$RES"
PY=${PYTHON:-python3}
# XLA takes 75 % of the GPU's memory by default; contributions.py's parent process touches the
# device (its references) before its children run, which then could not allocate
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ "${SMOKE:-0}" = 1 ]; then
    # tiny sizes: only checks that every command runs
    TRAIN="--samples 64 --steps 2 --bias-steps 2 --warmup 1 --loader-steps 2"
    PREDICT="--regions 16 --batch-size 8 --chrom-lengths 200000"
    CONTRIB="--regions 2 --references 2 --batch-size 1 --reference-batch-size 4"
    DEVICE=cpu
    MODELS="residual"  # the 512-filter model trains for minutes per step on a CPU
    $PY -c "import tangermeme" 2>/dev/null && IMPLS="bpflow-jax tangermeme" || IMPLS="bpflow-jax"
    LIMITS=(600 600 600 600 600 600 600)
    COMBINED="--epochs 2"
else
    if [ -d .whl ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site
    fi
    TRAIN="--samples 2048 --steps 30 --warmup 5"
    PREDICT="--regions 4096 --batch-size 128 --repeat 2"
    CONTRIB="--regions 256 --batch-size 32 --reference-batch-size 128"
    DEVICE=cuda
    MODELS="residual main512"
    IMPLS="bpflow-jax tangermeme"
    # seconds: train float32, train bfloat16, predict 64, contributions 64, predict 512,
    # contributions 512 (560 s in all; the first run on an H200 took 84, 45, 18, 72, 22 and
    # more than 140 for the last, where tangermeme did not finish 64 regions)
    # and the combined stage: both recipes at the packed epoch limit (60; 14 min on the 2-core CPU
    # box; on an H200 an estimated 3-4 s an epoch from train_throughput's 64 x 8 rate, ~6 min for
    # both) - more than the other six parts leave of one 590-s call, so run it alone (PARTS=combined)
    LIMITS=(${PART_LIMITS:-120 70 40 90 40 200 540})
    COMBINED=""
fi
PARTS=${PARTS:-train predict contributions combined}
want() { [[ " $PARTS " == *" $1 "* ]]; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
part() {  # part SECONDS NAME COMMAND...: run with a time limit, log its wall time and status
    local limit=$1 name=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    # a part stopped at its limit leaves its child processes (each implementation runs in one)
    [ $rc = 124 ] && pkill -f 'benchmarks/(train_throughput|predict_throughput|contributions|combined_walltime)\.py|-m bpflow'
    echo "PART $name rc=$rc seconds=$((SECONDS - t0)) limit=$limit" | tee -a "$RES/parts.txt"
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    nproc
    $PY -c "import sys, jax, keras; print(sys.version.split()[0], jax.__version__, keras.__version__, jax.devices())"
} > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
B=benchmarks
# training: float32, then mixed bfloat16 (its rows say precision mixed_bfloat16)
if want train; then
    part "${LIMITS[0]}" train-float32 $PY $B/train_throughput.py --backends jax --models $MODELS \
        --modes memory pipeline $TRAIN --jit-compile true --workdir /tmp/gpu-train \
        --json "$RES/train_float32.json"
    part "${LIMITS[1]}" train-bfloat16 $PY $B/train_throughput.py --backends jax --models $MODELS \
        --modes memory $TRAIN --jit-compile true --mixed-precision bfloat16 --workdir /tmp/gpu-train \
        --json "$RES/train_bfloat16.json"
fi
i=2
for f in 64 512; do
    want predict && part "${LIMITS[$i]}" predict-$f $PY $B/predict_throughput.py --filters $f $PREDICT \
        --json "$RES/predict_$f.json"
    [ $f = 512 ] && CONTRIB=${CONTRIB/--regions 256/--regions 64}
    want contributions && part "${LIMITS[$((i + 1))]}" contributions-$f $PY $B/contributions.py \
        --workdir /tmp/gpu-cb-$f --filters $f $CONTRIB --impls $IMPLS --reference-device $DEVICE \
        --json "$RES/contributions_$f.json" --markdown "$RES/contributions_$f.md"
    i=$((i + 2))
done
# the combined stage, default schedule then joint, one process each (logs kept)
if want combined; then
    if [ -f benchmarks/gpu-data/other-motifs/train_combined.json ]; then
        part "${LIMITS[6]}" combined $PY $B/combined_walltime.py run benchmarks/gpu-data/other-motifs \
            --workdir /tmp/gpu-cw $COMBINED --threads "$(nproc)" --python "$PY" --json "$RES/combined.json"
        for r in default joint; do cp /tmp/gpu-cw/$r.log "$RES/combined_$r.log" 2>/dev/null; done
    else
        echo "PART combined skipped: benchmarks/gpu-data/other-motifs not packed (see the header)" | tee -a "$RES/parts.txt"
    fi
fi
tar -czf "$OUT/gpu-results.tar.gz" -C "$RES" .
echo "done: $OUT/gpu-results.tar.gz"
