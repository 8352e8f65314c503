#!/usr/bin/env python
"""Prediction throughput of the ChromBPNet-shaped model: region BED -> prediction HDF5 -> bigWig.

Writes a synthetic genome (random sequence) and a BED of random regions into a work
directory, builds ``bpflow.models.soloModel(2114, 1000, 64, 8, 21, 75, ...)`` with one head of
two tasks (random weights: the speed does not depend on them), then times

1. model warm-up (the first batch: graph tracing / compilation), reported separately;
2. ``bpflow.predict.predict_regions``: BED -> prediction HDF5 (sequence extraction, model,
   writing);
3. ``bpflow.predict.predictions_to_bigwig``: prediction HDF5 -> one bigWig per task
   (profile mode).

The Keras backend comes from the environment (``KERAS_BACKEND=tensorflow`` or ``jax``), so
the same command measures each backend::

    KERAS_BACKEND=tensorflow python benchmarks/predict_throughput.py --regions 512
    KERAS_BACKEND=jax        python benchmarks/predict_throughput.py --regions 512

Prints a summary and, with ``--json``, writes the numbers as JSON.  With ``--repeat R`` both
steps run R times and the fastest run is reported (the median too): on a machine shared with
other work the fastest run is the least disturbed one.  ``*-regions-per-s`` = regions / seconds
of the step; end-to-end = regions / (prediction + bigWig seconds), warm-up excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

INPUT, OUTPUT, FILTERS, LAYERS, IN_WIDTH, OUT_WIDTH = 2114, 1000, 64, 8, 21, 75


def write_genome(path: Path, lengths: list[int], seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "w") as fh:
        for i, n in enumerate(lengths, 1):
            seq = letters[rng.integers(0, 4, n)].tobytes().decode()
            fh.write(f">chr{i}\n")
            for a in range(0, n, 60):
                fh.write(seq[a : a + 60] + "\n")
    return {f"chr{i}": n for i, n in enumerate(lengths, 1)}


def write_bed(path: Path, sizes: dict[str, int], num: int, seed: int) -> None:
    """``num`` random 1000-bp regions (sorted), all far enough from the ends for the model input."""
    rng = np.random.default_rng(seed + 1)
    flank = (INPUT - OUTPUT) // 2 + 1
    names = list(sizes)
    rows = []
    for _ in range(num):
        c = names[int(rng.integers(0, len(names)))]
        start = int(rng.integers(flank, sizes[c] - flank - OUTPUT))
        rows.append((c, start, start + OUTPUT))
    rows.sort()
    path.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=512, help="number of BED regions (default 512)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per model call (default 64)")
    parser.add_argument(
        "--chrom-lengths",
        type=int,
        nargs="+",
        default=[1_500_000, 1_000_000],
        help="synthetic chromosome lengths (default 1.5 Mb and 1 Mb)",
    )
    parser.add_argument("--revcomp-average", action="store_true", help="also predict reverse complements")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time the prediction and the bigWig step this many times; report the fastest "
        "(and the median) - useful on a shared machine (default 1)",
    )
    parser.add_argument(
        "--filters",
        type=int,
        default=FILTERS,
        help=f"filters per layer (default {FILTERS}; 512: ChromBPNet's main model)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        help="keep the genome, BED, predictions and bigWigs here (default: a temporary directory, deleted afterwards)",
    )
    parser.add_argument("--json", help="write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import keras

    import bpflow
    from bpflow.evaluate.bigwig import predictions_to_bigwig
    from bpflow.evaluate.inference import model_shape, predict_batch
    from bpflow.evaluate.predict import predict_regions
    from bpflow.formats.fasta import FastaFile
    from bpflow.models import soloModel

    keras.utils.set_random_seed(args.seed)
    tmp = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bpflow_bench_")
        work = Path(tmp.name)
    try:
        t = time.perf_counter()
        sizes = write_genome(work / "genome.fa", args.chrom_lengths, args.seed)
        write_bed(work / "regions.bed", sizes, args.regions, args.seed)
        genome = FastaFile(work / "genome.fa")  # builds the .fai index
        setup_s = time.perf_counter() - t

        model = soloModel(
            INPUT,
            OUTPUT,
            args.filters,
            LAYERS,
            IN_WIDTH,
            OUT_WIDTH,
            [{"head-name": "atac", "num-tasks": 2}],
            "chrombpnet_like",
        )
        shape = model_shape(model)
        t = time.perf_counter()
        predict_batch(model, np.zeros((args.batch_size, INPUT, 4), np.float32), shape.num_heads, args.revcomp_average)
        warmup_s = time.perf_counter() - t

        predict_times, bigwig_times = [], []
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            predict_regions(
                model,
                genome,
                work / "regions.bed",
                work / "predictions.h5",
                batch_size=args.batch_size,
                revcomp_average=args.revcomp_average,
            )
            predict_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            predictions_to_bigwig(
                work / "predictions.h5", [work / "pred.plus.bw", work / "pred.minus.bw"], genome=work / "genome.fa"
            )
            bigwig_times.append(time.perf_counter() - t)
        genome.close()
        predict_s, bigwig_s = min(predict_times), min(bigwig_times)
    finally:
        if tmp is not None:
            tmp.cleanup()

    n = args.regions
    result = {
        "benchmark": "predict_throughput",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "bpflow": bpflow.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
        "model": f"soloModel({INPUT}, {OUTPUT}, {args.filters}, {LAYERS}, {IN_WIDTH}, {OUT_WIDTH}), 1 head x 2 tasks, "
        f"{model.count_params()} parameters",
        "regions": n,
        "batch-size": args.batch_size,
        "revcomp-average": args.revcomp_average,
        "setup-s": round(setup_s, 3),
        "warmup-s": round(warmup_s, 3),
        "repeats": max(1, args.repeat),
        "predict-s": round(predict_s, 3),
        "predict-s-median": round(float(np.median(predict_times)), 3),
        "bigwig-s": round(bigwig_s, 3),
        "bigwig-s-median": round(float(np.median(bigwig_times)), 3),
        "predict-regions-per-s": round(n / predict_s, 2),
        "bigwig-regions-per-s": round(n / bigwig_s, 2),
        "end-to-end-regions-per-s": round(n / (predict_s + bigwig_s), 2),
    }
    try:
        import jax  # noqa: F401

        if result["backend"] == "jax":
            result["device"] = str(jax.devices()[0])
    except ImportError:
        pass
    if result["backend"] == "tensorflow":
        import tensorflow as tf

        result["device"] = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    from train_throughput import device_peak_mb  # benchmarks/ is this script's directory

    result["peak-device-mb"] = device_peak_mb()
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
