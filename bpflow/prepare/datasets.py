"""Training datasets: ``bpflow prepare-data CONFIG.json`` and ``bpflow inspect-data FILE.h5``.

The HDF5 layout is BPReveal's (``sequence``, ``head_0``, ``head_1``, ...; reverse-complement
pairs at samples 2k / 2k+1) plus per-sample coordinates under BPReveal's prediction-file names
(``chrom_names``, ``chrom_sizes``, ``coords_chrom``, ``coords_start``, ``coords_stop``) and
``coords_strand``, and the config as JSON in the ``metadata`` group.  See docs/data.md.

Work is split into batches of consecutive regions (BED order).  Each batch reads its windows
in merged blocks (bpflow.coverage), builds the forward / reverse-complement samples and
deflate-compresses whole HDF5 chunks; with ``num-threads`` > 1 batches are built in worker
threads (zlib and most numpy work release the GIL) while the main thread writes the
compressed chunks straight into the file (``write_direct_chunk``).  Memory is bounded by the
batches in flight, not by the number of regions.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpflow import schemas
from bpflow.formats.bed import iter_chrom_groups, read_bed
from bpflow.formats.bigwig import BigWigFile, check_chrom_sizes
from bpflow.formats.codec import BASE_CODE, COMPLEMENT_CODE, compress_chunks, compress_code_chunks
from bpflow.formats.dataset import create_arrays, write_coordinates, write_metadata
from bpflow.formats.fasta import FastaFile
from bpflow.formats.sequence import one_hot_windows, revcomp_task_order, reverse_complement_windows
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError, atomic_output, progress, read_step_config

logger = logging.getLogger("bpflow.prepare")


# Target uncompressed bytes per HDF5 chunk, and samples per batch of work.
CHUNK_BYTES = 1 << 20
BATCH_SAMPLES = 1024


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


def check_length_arithmetic(config: dict, source: str) -> None:
    """The output window sits in the middle of the input window (shared with prepare-regions)."""
    crop_offset(config["input-length"], config["output-length"], f"{source}: key input-length: the input window")


def normalize_data_config(config: dict, source: str = "config") -> dict:
    """Validate a prepare-data config (schema and cross-key rules) and return a copy with
    defaults filled in and each head's ``revcomp-task-order`` resolved to a list (or None
    without reverse complement).  Reads no data."""
    cfg = schemas.validate(config, "prepare-data", source)
    check_length_arithmetic(cfg, source)
    for i, head in enumerate(cfg["heads"]):
        where = f"{source}: heads/{i}"
        n = len(head["bigwig-files"])
        if "num-tasks" in head and head["num-tasks"] != n:
            raise BpflowError(
                f"{where}: num-tasks is {head['num-tasks']} but bigwig-files lists {n} "
                "file(s); give one bigWig per task"
            )
        head.setdefault("num-tasks", n)
        head.setdefault("head-name", f"head_{i}")
        if cfg["reverse-complement"]:
            head["revcomp-task-order"] = revcomp_task_order(head.get("revcomp-task-order", "auto"), n, where)
        else:
            if "revcomp-task-order" in head:
                raise BpflowError(f"{where}: revcomp-task-order is set but reverse-complement is false")
            head["revcomp-task-order"] = None
    return cfg


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    chrom: np.ndarray  # object array of str
    start: np.ndarray  # output-window start per region
    end: np.ndarray
    chrom_names: list[str]
    chrom_sizes: list[int]
    chrom_index: np.ndarray
    seq_pad: int  # bases added each side for the sequence window
    seq_len: int
    head_len: int


def _load_regions(
    cfg: dict, source: str, fasta_sizes: dict[str, int], bigwig_sizes: list[tuple[str, dict[str, int]]]
) -> _Plan:
    regions_path = cfg["regions"]
    bed = read_bed(regions_path, extra_columns=False)
    if len(bed) == 0:
        raise BpflowError(f"{regions_path}: no regions in this BED file")
    out, jitter = cfg["output-length"], cfg["max-jitter"]
    widths = bed.end - bed.start
    bad = np.flatnonzero(widths != out)
    if len(bad):
        k = int(bad[0])
        raise BpflowError(
            f"{bed.where(k)}: region {bed.chrom[k]}:{bed.start[k]}-{bed.end[k]} is "
            f"{widths[k]} bp wide but output-length is {out}; regions must be output-length "
            "wide (bpflow prepare-regions writes such BEDs)"
        )
    seq_pad = (cfg["input-length"] - out) // 2 + jitter
    for chrom, idx in iter_chrom_groups(bed.chrom):
        if chrom not in fasta_sizes:
            raise BpflowError(
                f"{cfg['genome']}: chromosome {chrom} (used at {bed.where(idx[0])}) is not in the FASTA file"
            )
        lo, hi = int(bed.start[idx].min()), int(bed.end[idx].max())
        if lo - seq_pad < 0 or hi + seq_pad > fasta_sizes[chrom]:
            k = idx[np.argmax((bed.start[idx] - seq_pad < 0) | (bed.end[idx] + seq_pad > fasta_sizes[chrom]))]
            raise BpflowError(
                f"{bed.where(k)}: region {chrom}:{bed.start[k]}-{bed.end[k]} padded to "
                f"input-length + 2*max-jitter runs off the end of {chrom} (length "
                f"{fasta_sizes[chrom]} in {cfg['genome']})"
            )
        for path, sizes in bigwig_sizes:
            if chrom not in sizes:
                raise BpflowError(f"{path}: chromosome {chrom} (used at {bed.where(idx[0])}) is not in this bigWig")
            check_chrom_sizes(path, sizes, cfg["genome"], fasta_sizes, [chrom], where=f"used at {bed.where(idx[0])}")
            if lo - jitter < 0 or hi + jitter > sizes[chrom]:
                k = idx[np.argmax((bed.start[idx] - jitter < 0) | (bed.end[idx] + jitter > sizes[chrom]))]
                raise BpflowError(
                    f"{bed.where(k)}: region {chrom}:{bed.start[k]}-{bed.end[k]} padded by "
                    f"max-jitter runs off the end of {chrom} (length {sizes[chrom]} in {path})"
                )
    order = list(fasta_sizes)
    names = [c for c, _ in iter_chrom_groups(bed.chrom, order)]
    lookup = {c: i for i, c in enumerate(names)}
    return _Plan(
        chrom=bed.chrom,
        start=bed.start,
        end=bed.end,
        chrom_names=names,
        chrom_sizes=[fasta_sizes[c] for c in names],
        chrom_index=np.array([lookup[c] for c in bed.chrom], dtype=np.int32),
        seq_pad=seq_pad,
        seq_len=cfg["input-length"] + 2 * jitter,
        head_len=out + 2 * jitter,
    )


# --------------------------------------------------------------------------------------
# Building batches
# --------------------------------------------------------------------------------------


class _Readers:
    """One FASTA handle and one handle per bigWig (one set per thread)."""

    def __init__(self, genome: str, bigwigs: list[list[str]], registry: list, lock: threading.Lock):
        self.fasta = FastaFile(genome)
        self.bigwigs = [[BigWigFile(p) for p in head] for head in bigwigs]
        with lock:
            registry.append(self)

    def close(self) -> None:
        self.fasta.close()
        for head in self.bigwigs:
            for bw in head:
                bw.close()


class _BatchBuilder:
    def __init__(self, cfg: dict, plan: _Plan, rows: int):
        self.cfg = cfg
        self.plan = plan
        self.rows = rows
        self.revcomp = cfg["reverse-complement"]
        self.orders = [h["revcomp-task-order"] for h in cfg["heads"]]
        self.negative = ["abs" if h["use-absolute-values"] else "error" for h in cfg["heads"]]
        self._registry: list[_Readers] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def _readers(self) -> _Readers:
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = _Readers(
                self.cfg["genome"], [h["bigwig-files"] for h in self.cfg["heads"]], self._registry, self._lock
            )
            self._local.readers = readers
        return readers

    def close(self) -> None:
        for readers in self._registry:
            readers.close()
        self._registry.clear()

    def build(self, r0: int, r1: int) -> dict:
        """Samples of regions r0..r1-1 as compressed chunks, plus per-head count totals."""
        readers = self._readers()
        plan, cfg, jitter = self.plan, self.cfg, self.cfg["max-jitter"]
        step = 2 if self.revcomp else 1
        n = (r1 - r0) * step
        # Final (interleaved) sample arrays; forward samples are the rows 0, step, 2*step, ...
        # With "fast" compression the sequence stays as base codes (1 byte per base, see
        # bpflow.formats.codec.deflate_codes) and is never expanded to one-hot.
        fast = cfg["compression"] == "fast"
        seq = np.empty((n, plan.seq_len) if fast else (n, plan.seq_len, 4), dtype=np.uint8)
        heads = [np.empty((n, plan.head_len, len(h["bigwig-files"])), dtype=np.float32) for h in cfg["heads"]]
        for chrom, idx in iter_chrom_groups(plan.chrom[r0:r1]):
            starts = plan.start[r0:r1][idx]
            raw = readers.fasta.windows(chrom, starts - plan.seq_pad, plan.seq_len)
            seq[idx * step] = BASE_CODE[raw] if fast else one_hot_windows(raw)
            for h, head_bws in enumerate(readers.bigwigs):
                for t, bw in enumerate(head_bws):
                    heads[h][idx * step, :, t] = bw.windows(
                        chrom, starts - jitter, plan.head_len, negative=self.negative[h]
                    )
        out_len = cfg["output-length"]
        totals = [float(h[0::step, jitter : jitter + out_len].sum(dtype=np.float64)) for h in heads]
        if self.revcomp:
            if fast:
                seq[1::2] = COMPLEMENT_CODE[seq[0::2, ::-1]]
            else:
                reverse_complement_windows(seq[0::2], out=seq[1::2])
            for h, order in zip(heads, self.orders):
                h[1::2] = h[0::2, ::-1][:, :, np.argsort(order)]
        comp, level = cfg["compression"], cfg["compression-level"]
        if fast:
            chunks = {"sequence": compress_code_chunks(seq, self.rows)}
        else:
            chunks = {"sequence": compress_chunks(seq, self.rows, comp, level, zlib.Z_HUFFMAN_ONLY)}
        for h, arr in enumerate(heads):
            chunks[f"head_{h}"] = compress_chunks(arr, self.rows, comp, level, zlib.Z_RLE)
        return {"r0": r0, "r1": r1, "chunks": chunks, "totals": totals}


def _chunk_rows(row_bytes: int, num_samples: int) -> int:
    rows = max(2, min(512, CHUNK_BYTES // max(row_bytes, 1)))
    rows -= rows % 2  # reverse-complement pairs never straddle a chunk
    return min(rows, num_samples)


def _ordered_results(builder: _BatchBuilder, batches: list[tuple[int, int]], threads: int):
    """Build batches (in worker threads when threads > 1) and yield results in order."""
    if threads <= 1:
        for r0, r1 in batches:
            yield builder.build(r0, r1)
        return
    ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bpflow-data")
    pending: collections.deque = collections.deque()
    todo = iter(batches)
    try:
        for r0, r1 in itertools.islice(todo, 2 * threads):
            pending.append(ex.submit(builder.build, r0, r1))
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(ex.submit(builder.build, *nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------
# Main entry points
# --------------------------------------------------------------------------------------


def prepare_data(config: dict, source: str = "config") -> dict:
    """Write the training HDF5 described by a prepare-data config (see docs/data.md).

    Validates the config and all inputs before writing; on any error no output file
    remains.  Returns a summary: output path, number of regions and samples, shapes and the
    total counts per head (output window of the forward samples).
    """
    import h5py

    cfg = normalize_data_config(config, source)
    files = [("genome", cfg["genome"]), ("regions", cfg["regions"])]
    files += [(f"heads/{i}/bigwig-files", p) for i, h in enumerate(cfg["heads"]) for p in h["bigwig-files"]]
    for key, path in files:
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key {key}: file not found: {path}")
    with FastaFile(cfg["genome"]) as fa:
        fasta_sizes = dict(fa.chrom_sizes)
    bigwig_sizes = []
    for head in cfg["heads"]:
        for path in head["bigwig-files"]:
            with BigWigFile(path) as bw:
                bigwig_sizes.append((path, dict(bw.chrom_sizes)))
    plan = _load_regions(cfg, source, fasta_sizes, bigwig_sizes)

    num_regions = len(plan.start)
    per_region = 2 if cfg["reverse-complement"] else 1
    num_samples = num_regions * per_region
    num_tasks = [len(h["bigwig-files"]) for h in cfg["heads"]]
    row_bytes = max([plan.seq_len * 4] + [plan.head_len * t * 4 for t in num_tasks])
    rows = _chunk_rows(row_bytes, num_samples)
    batch_samples = max(rows, (BATCH_SAMPLES // rows) * rows)
    batch_regions = batch_samples // per_region
    batches = [(r0, min(r0 + batch_regions, num_regions)) for r0 in range(0, num_regions, batch_regions)]
    threads = cfg["num-threads"]
    output = Path(cfg["output-h5"])
    logger.info(
        "prepare-data: %d regions -> %d samples, %d batches, %d thread(s) -> %s",
        num_regions,
        num_samples,
        len(batches),
        threads,
        output,
    )

    level = cfg["compression-level"] if cfg["compression"] == "gzip" else 1
    filters = {"compression": "gzip", "compression_opts": level} if cfg["compression"] != "none" else {}
    totals = np.zeros(len(cfg["heads"]), dtype=np.float64)
    builder = _BatchBuilder(cfg, plan, rows)
    with atomic_output(output) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                datasets = create_arrays(f, num_samples, plan.seq_len, plan.head_len, num_tasks, rows, filters)
                write_coordinates(
                    f, plan.chrom_names, plan.chrom_sizes, plan.chrom_index, plan.start, plan.end, per_region
                )
                write_metadata(
                    f,
                    cfg,
                    input_length=cfg["input-length"],
                    output_length=cfg["output-length"],
                    max_jitter=cfg["max-jitter"],
                    reverse_complement=cfg["reverse-complement"],
                    num_regions=num_regions,
                    head_names=json.dumps([h["head-name"] for h in cfg["heads"]]),
                    revcomp_task_orders=json.dumps([h["revcomp-task-order"] for h in cfg["heads"]]),
                )

                results = _ordered_results(builder, batches, threads)
                try:
                    for result in progress(results, total=len(batches), desc="prepare-data", unit="batches"):
                        s0 = result["r0"] * per_region
                        for name, chunks in result["chunks"].items():
                            dsid = datasets[name].id
                            for k, (data, mask) in enumerate(chunks):
                                offset = (s0 + k * rows,) + (0,) * (datasets[name].ndim - 1)
                                dsid.write_direct_chunk(offset, data, filter_mask=mask)
                        totals += result["totals"]
                finally:
                    results.close()  # stops the worker threads before their handles are closed
                f["metadata"].attrs["total_counts"] = json.dumps(totals.tolist())
        finally:
            builder.close()
    summary = {
        "output-h5": str(output),
        "num-regions": num_regions,
        "num-samples": num_samples,
        "sequence-shape": [num_samples, plan.seq_len, 4],
        "head-shapes": [[num_samples, plan.head_len, t] for t in num_tasks],
        "total-counts": totals.tolist(),
    }
    logger.info(
        "prepare-data: wrote %s (%d samples; total counts per head %s)",
        output,
        num_samples,
        ", ".join(f"{x:g}" for x in totals),
    )
    return summary


def main(argv: list[str]) -> int:
    path, config, _ = read_step_config(
        argv,
        "prepare-data",
        "Write a BPReveal-layout training HDF5 (sequence + head_i) from a FASTA, "
        "bigWigs and a BED of output-length regions.",
        "docs/data.md",
    )
    summary = prepare_data(config, source=path)
    print(f"wrote {summary['output-h5']}: {summary['num-regions']} regions, {summary['num-samples']} samples")
    return 0
