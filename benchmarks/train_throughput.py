"""Benchmark: training throughput through bpflow's HDF5 batch pipeline vs in-memory arrays.

    .venv/bin/python benchmarks/train_throughput.py                      # both backends, both models
    .venv/bin/python benchmarks/train_throughput.py --backends jax --models residual --steps 20
    .venv/bin/python benchmarks/train_throughput.py --repeat 3 --json results.json   # the README numbers

Models (``bpflow.models.soloModel``, one head of 2 tasks, batch 64):

* ``residual``: the ChromBPNet-shaped residual model, 64 filters, 8 layers, filter widths
  21/75, input 2114 -> output 1000;
* ``bias``: a bias model, 16 filters, 4 layers, widths 21/75, input 1154 -> output 1000.

For each backend and model the script writes a synthetic training HDF5 in prepare-data's
layout (``sequence`` uint8 and ``head_0`` float32, jitter 128, chunks of ~1 MiB, deflate
level 1) and runs, each in its own process:

* ``pipeline``: ``model.fit`` fed by :class:`bpflow.batcher.H5Batcher` (shuffled, random
  jitter, profiles read from the file batch by batch, ``--workers`` prefetch threads), with
  bpflow's losses and metrics (:func:`bpflow.training.compile_model`);
* ``memory``: the same compiled model fed the same kind of batches, built beforehand and held
  in memory (a ``PyDataset`` that returns them: the model alone, no file reads, no cropping);
* ``loader``: the batch pipeline alone (no model): how many examples/s it can produce.

Each process sets the C heap as ``bpflow train-*`` does (:mod:`bpflow.allocator`; run with
``BPFLOW_MALLOC=system`` for glibc's defaults).  Reported: training examples/s (after
``--warmup`` steps of compilation and warm-up, over ``--steps`` steps), the model's FLOPs
per example (multiply-adds x 2 of every Conv1D and Dense layer, forward; one training step is
counted as 3x forward), the achieved GFLOP/s, the peak RSS of the process and, on a GPU, the
peak device memory; and the pipeline's cost ``1 - pipeline / memory`` in throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUTPUT, JITTER, TASKS, BATCH = 1000, 128, 2, 64
MODELS = {
    "residual": dict(filters=64, layers=8, input_filter_width=21, output_filter_width=75),
    "bias": dict(filters=16, layers=4, input_filter_width=21, output_filter_width=75),
    # ChromBPNet's main (bias-factorized) model: 512 filters x 8 layers (for the GPU, benchmarks/gpu.sh)
    "main512": dict(filters=512, layers=8, input_filter_width=21, output_filter_width=75),
}


def input_length(model: str) -> int:
    a = MODELS[model]
    return OUTPUT + (a["input_filter_width"] - 1) + (2 ** (a["layers"] + 2) - 4) + (a["output_filter_width"] - 1)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def write_data(path: Path, n: int, in_len: int, seed: int = 0) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    seq_w, prof_w = in_len + 2 * JITTER, OUTPUT + 2 * JITTER
    row_bytes = max(seq_w * 4, prof_w * TASKS * 4)
    rows = max(2, min(512, n, (1 << 20) // row_bytes))  # no larger than the file (h5py refuses)
    rows -= rows % 2
    partial = path.with_name(path.name + ".partial")  # renamed when complete: a rerun reuses only whole files
    with h5py.File(partial, "w") as f:
        seq = f.create_dataset(
            "sequence", (n, seq_w, 4), np.uint8, chunks=(rows, seq_w, 4), compression="gzip", compression_opts=1
        )
        prof = f.create_dataset(
            "head_0",
            (n, prof_w, TASKS),
            np.float32,
            chunks=(rows, prof_w, TASKS),
            compression="gzip",
            compression_opts=1,
        )
        for r0 in range(0, n, rows):
            k = min(rows, n - r0)
            seq[r0 : r0 + k] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, size=(k, seq_w))]
            # sparse ChIP-nexus-like counts: most positions 0, a few reads
            prof[r0 : r0 + k] = rng.poisson(0.15, size=(k, prof_w, TASKS)).astype(np.float32)
    partial.rename(path)


# --------------------------------------------------------------------------------------
# One measurement (runs in its own process: KERAS_BACKEND is fixed at import)
# --------------------------------------------------------------------------------------


def model_flops(model) -> int:
    """Forward FLOPs per example: 2 x multiply-adds of every Conv1D and Dense layer."""
    import keras

    total = 0
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Conv1D):
            out_len = layer.output.shape[1]
            k = layer.kernel.shape  # (width, in, out)
            total += 2 * out_len * int(np.prod(k))
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return total


def device_peak_mb() -> float | None:
    """Peak accelerator memory of this process in MiB (None on a CPU or when unknown)."""
    peak = device_peak_bytes()
    return None if peak is None else peak / 2**20


def device_peak_bytes():
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform == "cpu":
                return None
            return dev.memory_stats().get("peak_bytes_in_use")
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                return None
            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except Exception:  # noqa: BLE001 - memory stats are best effort
        return None
    return None


def measure(args) -> dict:
    import keras

    import bpflow  # noqa: F401
    from bpflow.models import soloModel
    from bpflow.train.batcher import H5Batcher
    from bpflow.train.loop import compile_model
    from bpflow.train.settings import HeadSpec

    in_len = input_length(args.model)
    a = MODELS[args.model]
    heads = [HeadSpec("h0", TASKS, 1.0, 10.0, None)]
    keras.utils.set_random_seed(0)
    if args.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    model = soloModel(
        in_len,
        OUTPUT,
        a["filters"],
        a["layers"],
        a["input_filter_width"],
        a["output_filter_width"],
        [{"head-name": "h0", "num-tasks": TASKS}],
        args.model,
    )
    flops = model_flops(model)
    result = {
        "backend": keras.backend.backend(),
        "model": args.model,
        "mode": args.mode,
        "precision": keras.config.dtype_policy().name,
        "params": int(model.count_params()),
        "forward_flops": flops,
        "train_flops": 3 * flops,
    }
    steps, warmup = args.steps, args.warmup
    data = H5Batcher(
        args.data,
        [TASKS],
        in_len,
        OUTPUT,
        BATCH,
        max_jitter=JITTER,
        shuffle=True,
        seed=0,
        workers=args.workers,
        cache_mb=args.cache_mb,
        name="train-data",
    )
    if args.mode == "loader":
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(warmup):
            data[i % len(data)]
        t = time.perf_counter()
        n = 0
        epoch = 0
        while n < steps:
            data.set_epoch(epoch)
            for i in range(len(data)):
                if n >= steps:
                    break
                x, y = data[i]
                n += 1
            epoch += 1
        dt = time.perf_counter() - t
        result.update(examples_per_s=steps * BATCH / dt, seconds=dt, rss_after_warmup_kb=rss0)
    else:
        compile_model(model, heads, 1e-3, [10.0], jit_compile=args.jit_compile)
        if args.mode == "pipeline":
            epochs_used = [0]

            def fit(k, epoch):
                # k steps, over as many epochs of the file as needed
                while k > 0:
                    s = min(k, len(data))
                    data.set_epoch(epochs_used[0])
                    model.fit(data, epochs=1, steps_per_epoch=s, verbose=0)
                    epochs_used[0] += 1
                    k -= s
        else:
            # The same batches, built once and held in memory: the model fed without the file.
            import keras as _keras

            batches = []
            for i in range(max(steps, warmup)):
                data.set_epoch(i // len(data))
                batches.append(data[i % len(data)])
            data.close()

            class Memory(_keras.utils.PyDataset):
                def __init__(self):  # the same Keras input path as the pipeline: only the source differs
                    super().__init__(workers=max(1, args.workers))

                def __len__(self):
                    return len(batches)

                def __getitem__(self, i):
                    return batches[i]

            memory = Memory()

            def fit(k, epoch):
                model.fit(memory, epochs=1, steps_per_epoch=k, verbose=0)

        t = time.perf_counter()
        fit(warmup, 0)
        result["warmup_seconds"] = time.perf_counter() - t
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        fit(steps, 1)
        dt = time.perf_counter() - t
        result.update(examples_per_s=steps * BATCH / dt, seconds=dt, rss_after_warmup_kb=rss0)
        result["gflops_per_s"] = result["examples_per_s"] * result["train_flops"] / 1e9
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_device_mb"] = device_peak_mb()
    result["steps"], result["warmup"] = steps, warmup
    return result


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def run_one(backend: str, model: str, mode: str, data: Path, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--inner",
        "--model",
        model,
        "--mode",
        mode,
        "--data",
        str(data),
        "--steps",
        str(args.loader_steps if mode == "loader" else args.bias_steps if model == "bias" else args.steps),
        "--warmup",
        str(args.warmup),
        "--workers",
        str(args.workers),
        "--cache-mb",
        str(args.cache_mb),
        "--jit-compile",
        args.jit_compile,
    ]
    if args.mixed_precision:
        cmd += ["--mixed-precision", args.mixed_precision]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{backend} {model} {mode} failed")
    out = json.loads(lines[-1][7:])
    out["process_seconds"] = time.perf_counter() - t
    return out


def table(results: list[dict]) -> str:
    rows = [
        "| backend | model | precision | params | GFLOP/example (train) | mode | examples/s | GFLOP/s | peak RSS (MB) "
        "| RSS growth in measured steps (MB) | peak device (MB) | pipeline cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["backend"], r["model"], r["mode"]): r for r in results}
    for r in results:
        cost = ""
        if r["mode"] == "pipeline" and (r["backend"], r["model"], "memory") in by:
            mem = by[(r["backend"], r["model"], "memory")]["examples_per_s"]
            cost = f"{100 * (1 - r['examples_per_s'] / mem):+.1f} %"
        gf = f"{r['gflops_per_s']:.1f}" if "gflops_per_s" in r else "-"
        dev = f"{r['peak_device_mb']:.0f}" if r.get("peak_device_mb") else "-"
        rows.append(
            f"| {r['backend']} | {r['model']} | {r.get('precision', 'float32')} | {r['params']:,} | {r['train_flops'] / 1e9:.3f} | "
            f"{r['mode']} | {r['examples_per_s']:.1f} | {gf} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] - r['rss_after_warmup_kb'] / 1024:.0f} | {dev} | {cost} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--models", nargs="+", default=["residual", "bias"], choices=list(MODELS))
    parser.add_argument(
        "--modes", nargs="+", default=["memory", "pipeline", "loader"], choices=["memory", "pipeline", "loader"]
    )
    parser.add_argument("--samples", type=int, default=2048, help="samples in the synthetic HDF5 file")
    parser.add_argument("--steps", type=int, default=12, help="measured training steps (residual model)")
    parser.add_argument("--bias-steps", type=int, default=48, help="measured training steps (bias model)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest is kept")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps (compilation)")
    parser.add_argument("--loader-steps", type=int, default=100, help="batches for the loader-only run")
    parser.add_argument("--workers", type=int, default=2, help="PyDataset prefetch threads")
    parser.add_argument("--cache-mb", type=float, default=256)
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="float16",
        choices=["float16", "bfloat16"],
        help="Keras's mixed_float16 (the flag alone) or mixed_bfloat16 policy",
    )
    parser.add_argument("--workdir", help="keep the data files here")
    parser.add_argument("--json", help="write the results to this file")
    # internal: one measurement
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        # the C heap as `bpflow train-*` sets it (BPFLOW_MALLOC=system keeps glibc's defaults)
        from bpflow.allocator import tune_malloc

        malloc = tune_malloc()
        args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
        print("RESULT " + json.dumps({**measure(args), "malloc": malloc}), flush=True)
        return 0

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bpflow-train-bench-")
        workdir = Path(tmp.name)
    results = []
    try:
        for model in args.models:
            data = workdir / f"{model}.h5"
            if not data.exists():
                t = time.perf_counter()
                write_data(data, args.samples, input_length(model))
                print(
                    f"wrote {data} ({data.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s",
                    file=sys.stderr,
                )
            for backend in args.backends:
                for mode in args.modes:
                    runs = [run_one(backend, model, mode, data, args) for _ in range(args.repeat)]
                    r = max(runs, key=lambda x: x["examples_per_s"])
                    r["all_examples_per_s"] = [x["examples_per_s"] for x in runs]
                    results.append(r)
                    print(
                        f"{backend:10s} {model:8s} {mode:8s} {r['examples_per_s']:8.1f} examples/s "
                        f"(peak RSS {r['peak_rss_mb']:.0f} MB; malloc: {r.get('malloc')})",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
