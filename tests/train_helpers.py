"""Tiny BPReveal-layout HDF5 training files and step configs for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from bpflow import lengths

# A tiny bias model and a tiny residual model whose inputs crop to each other.
BIAS_ARCH = dict(filters=4, layers=1, input_filter_width=5, output_filter_width=3)  # in = out + 10
RESIDUAL_ARCH = dict(filters=6, layers=2, input_filter_width=5, output_filter_width=5)  # in = out + 20
OUTPUT_LENGTH = 24
JITTER = 4

MOTIF = "GATAAG"  # the "transcription factor": a footprint of many reads around it
BIAS_KMER = "TA"  # the "enzyme bias": a few more reads wherever it starts


def needed(arch: dict, out: int = OUTPUT_LENGTH) -> int:
    return lengths.needed_input_length(out, arch["layers"], arch["input_filter_width"], arch["output_filter_width"])


def one_hot(bases: np.ndarray) -> np.ndarray:
    """(n, L) integer bases 0..3 -> (n, L, 4) uint8."""
    return np.eye(4, dtype=np.uint8)[bases]


def write_h5(path, sequence, heads, *, chunks=None, compression=None, metadata=None):
    """Write ``sequence`` (n, L, 4) and ``head_i`` arrays; ``chunks`` = rows per chunk."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        kw = {}
        if chunks:
            kw["compression"] = compression
        f.create_dataset(
            "sequence",
            data=np.asarray(sequence, dtype=np.uint8),
            chunks=(chunks, sequence.shape[1], 4) if chunks else None,
            **kw,
        )
        for i, arr in enumerate(heads):
            arr = np.asarray(arr, dtype=np.float32)
            f.create_dataset(f"head_{i}", data=arr, chunks=(chunks, *arr.shape[1:]) if chunks else None, **kw)
        if metadata is not None:
            g = f.create_group("metadata")
            for k, v in metadata.items():
                g.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    return path


def synthetic_arrays(n: int, seq_width: int, prof_width: int, num_tasks: int = 2, seed: int = 0, depth: float = 1.0):
    """Random sequence with a planted motif in half the samples; Poisson reads with rate
    0.05 + 0.3 * [bias k-mer] + a footprint around the motif; task 1 is task 0 shifted by 2.

    Windows are centered: profile position p sits at sequence position p + (seq - prof) / 2.
    Everything derives from a 400-base master sample, so files of different widths made with
    the same seed hold the same samples.
    """
    master = 400
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 4, size=(n, master))
    center = master // 2
    motif = np.array(["ACGT".index(c) for c in MOTIF])
    has_motif = rng.random(n) < 0.5
    shifts = rng.integers(-6, 7, size=n)
    for i in np.flatnonzero(has_motif):
        s = center + shifts[i] - len(motif) // 2
        bases[i, s : s + len(motif)] = motif
    kmer = np.array(["ACGT".index(c) for c in BIAS_KMER])
    is_kmer = np.all([bases[:, k : master - len(kmer) + 1 + k] == kmer[k] for k in range(len(kmer))], axis=0)
    rate = 0.05 + 0.3 * np.pad(is_kmer, ((0, 0), (0, len(kmer) - 1))).astype(float)
    pos = np.arange(master)
    for i in np.flatnonzero(has_motif):
        rate[i] += 3.0 * np.exp(-0.5 * ((pos - center - shifts[i]) / 3.0) ** 2)
    rate *= depth
    counts = rng.poisson(np.stack([rate, np.roll(rate, 2, axis=1)][:num_tasks], axis=-1)).astype(np.float32)
    s0 = (master - seq_width) // 2
    p0 = (master - prof_width) // 2
    return one_hot(bases[:, s0 : s0 + seq_width]), counts[:, p0 : p0 + prof_width, :num_tasks]


def synthetic_h5(
    path,
    n: int,
    input_length: int,
    output_length: int = OUTPUT_LENGTH,
    jitter: int = JITTER,
    num_tasks: int = 2,
    seed: int = 0,
    **kw,
):
    seq, prof = synthetic_arrays(n, input_length + 2 * jitter, output_length + 2 * jitter, num_tasks, seed)
    return write_h5(path, seq, [prof], **kw)


def head(name="h0", tasks=2, **kw):
    out = {"head-name": name, "num-tasks": tasks, "profile-loss-weight": 1.0}
    out.update(kw)
    if "counts-loss-weight" not in out and "counts-loss-frac-target" not in out:
        out["counts-loss-weight"] = 10.0
    return out


def settings(prefix, **kw):
    out = {
        "output-prefix": str(prefix),
        "epochs": 2,
        "max-jitter": JITTER,
        "early-stopping-patience": 5,
        "batch-size": 16,
        "learning-rate": 0.01,
        "learning-rate-plateau-patience": 3,
        "data-workers": 1,
    }
    out.update(kw)
    return out


def solo_config(tmp, train, val, prefix="bias", heads=None, **kw):
    arch = {
        "architecture-name": "bpnet",
        "input-length": needed(BIAS_ARCH),
        "output-length": OUTPUT_LENGTH,
        "model-name": "solo",
        "filters": BIAS_ARCH["filters"],
        "layers": BIAS_ARCH["layers"],
        "input-filter-width": BIAS_ARCH["input_filter_width"],
        "output-filter-width": BIAS_ARCH["output_filter_width"],
    }
    return {
        "settings": {**settings(Path(tmp) / prefix, **kw), "architecture": arch},
        "train-data": str(train),
        "val-data": str(val),
        "heads": heads or [head()],
        "verbosity": "WARNING",
    }


def transformation_config(tmp, train, val, solo_file, prefix="transformation", heads=None, **kw):
    s = settings(Path(tmp) / prefix, **{"learning-rate": 0.05, **kw})
    s.update(
        {
            "solo-model-file": str(solo_file),
            "input-length": needed(BIAS_ARCH),
            "output-length": OUTPUT_LENGTH,
            "profile-architecture": {"name": "simple", "types": ["linear"]},
            "counts-architecture": {"name": "simple", "types": ["linear"]},
        }
    )
    return {
        "settings": s,
        "train-data": str(train),
        "val-data": str(val),
        "heads": heads or [head()],
        "verbosity": "WARNING",
    }


def combined_config(tmp, train, val, transformation_file, prefix="combined", heads=None, **kw):
    arch = {
        "architecture-name": "bpnet",
        "input-length": needed(RESIDUAL_ARCH),
        "output-length": OUTPUT_LENGTH,
        "filters": RESIDUAL_ARCH["filters"],
        "layers": RESIDUAL_ARCH["layers"],
        "input-filter-width": RESIDUAL_ARCH["input_filter_width"],
        "output-filter-width": RESIDUAL_ARCH["output_filter_width"],
    }
    s = {
        **settings(Path(tmp) / prefix, **kw),
        "architecture": arch,
        "transformation-model": {"transformation-model-file": str(transformation_file)},
    }
    return {
        "settings": s,
        "train-data": str(train),
        "val-data": str(val),
        "heads": heads or [head(**{"use-bias-counts": True})],
        "verbosity": "WARNING",
    }


def write_config(path, config) -> str:
    Path(path).write_text(json.dumps(config, indent=1))
    return str(path)


def predicted_targets(model, x, refs, target, head):
    """f(x) and mean_r f(ref_r) of a contribution target from model.predict, independently of
    bpflow.interpret (profile: the input's softmax weights for the references too)."""
    n, r = refs.shape[:2]
    heads = len(model.outputs) // 2
    out_x = model.predict(x.astype(np.float32), verbose=0)
    out_r = model.predict(refs.reshape(n * r, *refs.shape[2:]).astype(np.float32), verbose=0)
    if target == "counts":
        return out_x[heads + head][:, 0], out_r[heads + head][:, 0].reshape(n, r).mean(1)
    logits_x = out_x[head].reshape(n, -1).astype(np.float64)
    logits_r = out_r[head].reshape(n, r, -1).astype(np.float64)
    w = np.exp(logits_x - logits_x.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    f_x = ((logits_x - logits_x.mean(1, keepdims=True)) * w).sum(1)
    f_r = ((logits_r - logits_r.mean(2, keepdims=True)) * w[:, None]).sum(2)
    return f_x, f_r.mean(1)
