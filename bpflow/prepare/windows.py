"""Reading the padded windows of many regions (prepare-regions, background sampling).

A region's *padded* window is its output window grown by (input-length - output-length) / 2 +
max-jitter on each side: the sequence and coverage a training sample can ever see.  Work is
split into batches of windows of one chromosome, read in threads with per-thread handles.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bpflow.formats.bed import iter_chrom_groups
from bpflow.formats.bigwig import BigWigFile, window_sums
from bpflow.formats.fasta import FastaFile
from bpflow.formats.sequence import acgt_mask, gc_mask
from bpflow.utils import progress

# Windows per unit of work when reading sequence or coverage.
WORK_BATCH = 1024


class Handles:
    """Lazily opened FASTA / bigWig handles, one set per thread, closed together."""

    def __init__(self, genome: str, bigwigs: list[list[str]]):
        self.genome, self.bigwigs = genome, bigwigs
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        h = getattr(self._local, "h", None)
        if h is None:
            h = (FastaFile(self.genome), [[BigWigFile(p) for p in head] for head in self.bigwigs])
            self._local.h = h
            with self._lock:
                self._all.append(h)
        return h

    def close(self) -> None:
        for fasta, heads in self._all:
            fasta.close()
            for head in heads:
                for bw in head:
                    bw.close()
        self._all.clear()


def run_tasks(tasks: list, func: Callable, threads: int, desc: str | None) -> list:
    """func(task) for each task, in threads when threads > 1; results in task order (with
    progress lines when ``desc`` is given)."""

    def shown(items):
        return progress(items, total=len(items), desc=desc, unit="batches") if desc else items

    if threads <= 1 or len(tasks) <= 1:
        return [func(t) for t in shown(tasks)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bpflow-regions") as ex:
        futures = [ex.submit(func, t) for t in tasks]
        try:
            return [f.result() for f in shown(futures)]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def window_tasks(chroms: np.ndarray, starts: np.ndarray, order: list[str]) -> list[tuple[str, np.ndarray]]:
    """(chrom, indices sorted by start) work units of at most WORK_BATCH windows."""
    tasks = []
    for chrom, idx in iter_chrom_groups(chroms, order):
        idx = idx[np.argsort(starts[idx], kind="stable")]
        for k in range(0, len(idx), WORK_BATCH):
            tasks.append((chrom, idx[k : k + WORK_BATCH]))
    return tasks


@dataclass
class Geometry:
    input_length: int
    output_length: int
    jitter: int

    @property
    def pad(self) -> int:  # padded window = output window grown by this on each side
        return (self.input_length - self.output_length) // 2 + self.jitter

    @property
    def padded_length(self) -> int:
        return self.input_length + 2 * self.jitter

    @property
    def min_window(self) -> tuple[int, int]:  # (offset in padded window, width) for min-counts
        width = max(self.output_length - 2 * self.jitter, 1)
        return self.pad + (self.output_length - width) // 2, width


def sequence_stats(
    handles: Handles,
    geo: Geometry,
    chroms: np.ndarray,
    out_starts: np.ndarray,
    index: np.ndarray,
    order: list[str],
    threads: int,
    desc: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-ACGT fraction of each padded window and GC fraction of its input-length window."""
    nonacgt = np.zeros(len(index), dtype=np.float64)
    gc = np.zeros(len(index), dtype=np.float64)
    sub_starts = out_starts[index]

    def work(task):
        chrom, idx = task
        fasta, _ = handles.get()
        raw = fasta.windows(chrom, sub_starts[idx] - geo.pad, geo.padded_length)
        acgt = acgt_mask(raw)
        inner = slice(geo.jitter, geo.jitter + geo.input_length)
        n_acgt = acgt[:, inner].sum(axis=1)
        n_gc = gc_mask(raw[:, inner]).sum(axis=1)
        frac_gc = np.divide(n_gc, n_acgt, out=np.zeros(len(idx)), where=n_acgt > 0)
        return idx, 1.0 - acgt.sum(axis=1) / geo.padded_length, frac_gc

    for idx, na, g in run_tasks(window_tasks(chroms[index], sub_starts, order), work, threads, desc):
        nonacgt[idx], gc[idx] = na, g
    return nonacgt, gc


def count_sums(
    handles: Handles,
    geo: Geometry,
    heads: list[dict],
    chroms: np.ndarray,
    out_starts: np.ndarray,
    index: np.ndarray,
    order: list[str],
    threads: int,
    desc: str | None,
    windows: tuple[str, ...] = ("padded", "min", "output"),
) -> dict[str, np.ndarray]:
    """Per head, the coverage summed over its bigWigs in the padded window ("padded"), the
    central output-length - 2*max-jitter window ("min") and the output window ("output").
    Arrays of shape (len(index), num_heads)."""
    offsets = {"padded": (0, geo.padded_length), "min": geo.min_window, "output": (geo.pad, geo.output_length)}
    result = {w: np.zeros((len(index), len(heads)), dtype=np.float64) for w in windows}
    sub_starts = out_starts[index]
    negative = ["abs" if h["use-absolute-values"] else "error" for h in heads]

    def work(task):
        chrom, idx = task
        _, bigwigs = handles.get()
        sums = {w: np.zeros((len(idx), len(heads))) for w in windows}
        for h, head_bws in enumerate(bigwigs):
            total = np.zeros((len(idx), geo.padded_length), dtype=np.float32)
            for bw in head_bws:
                total += bw.windows(chrom, sub_starts[idx] - geo.pad, geo.padded_length, negative=negative[h])
            for w in windows:
                off, width = offsets[w]
                sums[w][:, h] = window_sums(total, off, width)
        return idx, sums

    for idx, sums in run_tasks(window_tasks(chroms[index], sub_starts, order), work, threads, desc):
        for w in windows:
            result[w][idx] = sums[w]
    return result
