"""Benchmark: bpflow prepare-data against a straightforward per-region pyfaidx + pyBigWig loop.

    .venv/bin/python benchmarks/prepare_data.py                 # 20,000 regions (a few minutes)
    .venv/bin/python benchmarks/prepare_data.py --regions 2000  # a quick version

Generates a synthetic genome (default 50 Mb in 5 chromosomes, random bases with three N runs
of 20-100 kb per chromosome like assembly gaps), two stranded bigWigs with sparse integer
counts (ChIP-nexus-like: ~5% of bases covered) and a sorted BED of random 1000 bp regions;
then writes the same training HDF5 (input 2114, jitter 128, reverse complement) with

* baseline: one pyfaidx fetch and one pyBigWig ``values`` call per region and bigWig,
  one-hot + reverse complement per region, samples written in chunk-sized slices through
  h5py's gzip filter (level 1, the fastest standard level);
* bpflow with its default compression, with 1 thread and with N threads;
* bpflow with ``"compression": "gzip"``, level 1 (the baseline's file settings).

Each run is a separate process; it reports its wall time (without Python start-up and
imports), its peak RSS and its RSS after imports.  Every variant runs ``--repeat`` times
(fastest and median reported: the box may be shared).  The outputs are checked to be
identical.
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

INPUT, OUTPUT, JITTER = 2114, 1000, 128


# --------------------------------------------------------------------------------------
# Synthetic inputs
# --------------------------------------------------------------------------------------


def generate(workdir: Path, genome_size: int, num_regions: int, seed: int = 0, gaps: bool = True) -> dict:
    """A random 5-chromosome genome (with three N runs per chromosome, like assembly gaps,
    unless ``gaps`` is False), two sparse stranded count bigWigs and a sorted BED of
    ``num_regions`` random output-length regions whose input windows, jitter included, fit."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    n_chroms = 5
    sizes = {f"chr{i + 1}": genome_size // n_chroms for i in range(n_chroms)}
    genome = workdir / "genome.fa"
    with open(genome, "w") as fh:
        for chrom, n in sizes.items():
            fh.write(f">{chrom}\n")
            seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)]
            for _ in range(3 if gaps else 0):  # N runs like assembly gaps; some regions overlap them
                a = int(rng.integers(0, n - 100_000))
                seq[a : a + int(rng.integers(20_000, 100_000))] = ord("N")
            text = seq.tobytes()
            fh.write("\n".join(text[i : i + 60].decode() for i in range(0, n, 60)))
            fh.write("\n")
    bigwigs = []
    for strand in ("plus", "minus"):
        path = workdir / f"{strand}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader(list(sizes.items()), maxZooms=0)
        for chrom, n in sizes.items():
            pos = np.flatnonzero(rng.random(n) < 0.05)
            vals = rng.integers(1, 6, len(pos)).astype(np.float64)
            bw.addEntries([chrom] * len(pos), pos.tolist(), ends=(pos + 1).tolist(), values=vals.tolist())
        bw.close()
        bigwigs.append(str(path))
    pad = (INPUT - OUTPUT) // 2 + JITTER
    rows = []
    per_chrom = np.bincount(rng.integers(0, n_chroms, num_regions), minlength=n_chroms)
    for (chrom, n), k in zip(sizes.items(), per_chrom):
        for s in np.sort(rng.integers(pad, n - OUTPUT - pad, k)):
            rows.append(f"{chrom}\t{s}\t{s + OUTPUT}\n")
    regions = workdir / "regions.bed"
    regions.write_text("".join(rows))
    import pyfaidx

    pyfaidx.Faidx(str(genome)).close()  # build the .fai now, so that no measured run pays for it
    return {"genome": str(genome), "bigwigs": bigwigs, "regions": str(regions), "num_regions": num_regions}


# --------------------------------------------------------------------------------------
# Children (one process per measured run)
# --------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_baseline(inputs: dict, output: str) -> dict:
    import h5py
    import pyBigWig
    import pyfaidx

    after_import = _rss_mb()
    table = np.zeros((256, 4), dtype=np.uint8)
    for i, b in enumerate(b"ACGT"):
        table[b, i] = table[b + 32, i] = 1
    start = time.perf_counter()
    fasta = pyfaidx.Fasta(inputs["genome"], as_raw=True, sequence_always_upper=False)
    bws = [pyBigWig.open(p) for p in inputs["bigwigs"]]
    regions = [line.split("\t") for line in Path(inputs["regions"]).read_text().splitlines()]
    n = len(regions)
    pad = (INPUT - OUTPUT) // 2 + JITTER
    seq_len, head_len = INPUT + 2 * JITTER, OUTPUT + 2 * JITTER
    rows = 110  # same chunk shape as bpflow uses for these lengths
    buf_regions = 512
    with h5py.File(output, "w") as f:
        seq_ds = f.create_dataset(
            "sequence", (2 * n, seq_len, 4), np.uint8, chunks=(rows, seq_len, 4), compression="gzip", compression_opts=1
        )
        head_ds = f.create_dataset(
            "head_0",
            (2 * n, head_len, 2),
            np.float32,
            chunks=(rows, head_len, 2),
            compression="gzip",
            compression_opts=1,
        )
        seq_buf = np.zeros((2 * buf_regions, seq_len, 4), np.uint8)
        head_buf = np.zeros((2 * buf_regions, head_len, 2), np.float32)
        for b0 in range(0, n, buf_regions):
            b1 = min(n, b0 + buf_regions)
            for k, (chrom, s, e) in enumerate(regions[b0:b1]):
                s, e = int(s), int(e)
                seq = fasta[chrom][s - pad : e + pad]
                onehot = table[np.frombuffer(seq.encode(), np.uint8)]
                seq_buf[2 * k] = onehot
                seq_buf[2 * k + 1] = onehot[::-1, ::-1]
                for t, bw in enumerate(bws):
                    vals = np.nan_to_num(bw.values(chrom, s - JITTER, e + JITTER, numpy=True))
                    head_buf[2 * k, :, t] = vals
                    head_buf[2 * k + 1, :, 1 - t] = vals[::-1]
            m = 2 * (b1 - b0)
            seq_ds[2 * b0 : 2 * b1] = seq_buf[:m]
            head_ds[2 * b0 : 2 * b1] = head_buf[:m]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_after_import_mb": after_import, "peak_rss_mb": _peak_mb()}


def child_bpflow(inputs: dict, output: str, threads: int, compression: str) -> dict:
    from bpflow.prepare.datasets import prepare_data

    after_import = _rss_mb()
    cfg = {
        "genome": inputs["genome"],
        "input-length": INPUT,
        "output-length": OUTPUT,
        "max-jitter": JITTER,
        "regions": inputs["regions"],
        "output-h5": output,
        "reverse-complement": True,
        "heads": [{"bigwig-files": inputs["bigwigs"], "revcomp-task-order": "auto"}],
        "num-threads": threads,
        "compression": compression,
        "verbosity": "WARNING",
    }
    if compression == "gzip":
        cfg["compression-level"] = 1
    start = time.perf_counter()
    prepare_data(cfg)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_after_import_mb": after_import, "peak_rss_mb": _peak_mb()}


def run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_contents(a: str, b: str) -> bool:
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("sequence", "head_0"):
            n = fa[name].shape[0]
            if fb[name].shape != fa[name].shape:
                return False
            for s0 in range(0, n, 2048):
                if not np.array_equal(fa[name][s0 : s0 + 2048], fb[name][s0 : s0 + 2048]):
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", type=int, default=20000, help="number of regions (default 20000)")
    parser.add_argument("--genome-size", type=int, default=50_000_000, help="synthetic genome size (50 Mb)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for the bpflow run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per variant; the fastest and the median are reported (default 3)"
    )
    parser.add_argument("--workdir", help="directory for inputs and outputs (default: a temporary one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, inputs_json, output = args.child[:3]
        inputs = json.loads(Path(inputs_json).read_text())
        if kind == "baseline":
            result = child_baseline(inputs, output)
        else:
            result = child_bpflow(inputs, output, int(args.child[3]), args.child[4])
        print(json.dumps(result))
        return

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bpflow-bench-")
        workdir = Path(tmp.name)
    t0 = time.perf_counter()
    inputs = generate(workdir, args.genome_size, args.regions)
    inputs_json = workdir / "inputs.json"
    inputs_json.write_text(json.dumps(inputs))
    print(
        f"generated {args.genome_size / 1e6:g} Mb genome, 2 bigWigs, {args.regions} regions "
        f"in {time.perf_counter() - t0:.1f} s ({workdir})"
    )
    runs = [
        (
            "baseline: per-region pyfaidx + pyBigWig, h5py gzip-1",
            ["baseline", str(inputs_json), str(workdir / "base.h5")],
        ),
        ("bpflow, 1 thread, compression gzip-1", ["bpflow", str(inputs_json), str(workdir / "gz.h5"), "1", "gzip"]),
        ("bpflow, 1 thread (default compression)", ["bpflow", str(inputs_json), str(workdir / "b1.h5"), "1", "fast"]),
        (
            f"bpflow, {args.threads} threads (default compression)",
            ["bpflow", str(inputs_json), str(workdir / "bn.h5"), str(args.threads), "fast"],
        ),
    ]
    results = []
    for label, child_args in runs:
        reps = [run_child(child_args) for _ in range(max(1, args.repeat))]
        rates = sorted(args.regions / r["seconds"] for r in reps)
        r = {
            "label": label,
            "regions_per_s": rates[-1],
            "median_regions_per_s": float(np.median(rates)),
            "seconds": min(x["seconds"] for x in reps),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in reps),
            "rss_after_import_mb": min(x["rss_after_import_mb"] for x in reps),
            "file_mb": os.path.getsize(child_args[2]) / 1e6,
        }
        results.append(r)
        print(
            f"  {label:<55} {r['seconds']:6.2f} s  {r['regions_per_s']:7.0f} regions/s "
            f"(median of {len(reps)}: {r['median_regions_per_s']:6.0f})  peak RSS {r['peak_rss_mb']:4.0f} MB "
            f"(after imports {r['rss_after_import_mb']:4.0f} MB, +{r['peak_rss_mb'] - r['rss_after_import_mb']:.0f} MB)"
            f"  file {r['file_mb']:.0f} MB"
        )
    base, base_median = results[0]["regions_per_s"], results[0]["median_regions_per_s"]
    for r in results[1:]:
        print(
            f"  speed-up over the baseline, {r['label']}: {r['regions_per_s'] / base:.1f}x fastest vs fastest, "
            f"{r['median_regions_per_s'] / base_median:.1f}x median vs median"
        )
    ok = all(same_contents(str(workdir / "base.h5"), str(workdir / name)) for name in ("gz.h5", "b1.h5", "bn.h5"))
    print(f"  outputs identical to the baseline's: {ok}")
    if tmp is not None:
        tmp.cleanup()
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
