"""Training batches streamed from BPReveal-layout HDF5 files: :class:`H5Batcher`.

A file holds ``sequence`` (N, input-length + 2*J, 4) uint8 one-hot and ``head_0``,
``head_1``, ... (N, output-length + 2*J, num-tasks) float32 (BPReveal's
prepareTrainingData layout, see docs/data.md).  The batcher is a ``keras.utils.PyDataset``
that yields ``(x, y)`` (training) or ``(x, y, sample_weight)`` (validation):

- ``x``: float32 (batch, input-length, 4);
- ``y``: each head's profile (batch, output-length, num-tasks) float32, then each head's
  counts target ``log(1 + total counts of the head in the window)`` (batch, 1) float32, in
  the order of the model's outputs.

Memory: the uint8 ``sequence`` arrays are read into memory once; profiles are read from the
file batch by batch (never a float32 copy of the whole dataset).  Compressed, chunked profile
datasets are read through HDF5's chunk cache, bounded by ``cache_mb``.

Every batch is a pure function of ``(seed, epoch, index)``: the sample order of an epoch, each
sample's jitter offset (uniform in 0..2*max_jitter, the same for sequence and profiles) and
its optional on-the-fly reverse complement come from ``numpy.random.default_rng([seed,
epoch, k])``.  So batches can be built in any order, in worker threads, and a run resumed at
epoch E sees exactly the batches an uninterrupted run sees.  The trainer calls
:meth:`H5Batcher.set_epoch` at the start of every epoch.

Shuffling: a full per-sample permutation every epoch when the decompressed profile data fits
in the chunk cache (or the datasets are not chunked).  Otherwise a two-level shuffle that keeps
reads cheap: the HDF5 chunks (blocks of consecutive samples) are permuted, taken in windows of
as many chunks as fit in half the cache, and the samples of each window are permuted.  Every
sample is still used exactly once per epoch.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import keras
import numpy as np

from bpflow.formats.dataset import TrainingDataset, read_error, reading
from bpflow.formats.sequence import revcomp_task_order
from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.train")

# Rows per block when scanning a profile dataset that is not chunked.
_SCAN_BLOCK_BYTES = 64 << 20


@dataclass
class HeadStats:
    """Totals of one head over the central (un-jittered) output windows of a data set."""

    num_samples: int
    mean_total: float
    median_total: float
    max_total: float
    zero_windows: int


@dataclass
class _Source:
    path: Path
    data: TrainingDataset
    sequence: np.ndarray  # (n, seq_width, 4) uint8, in memory
    heads: list  # h5py datasets, (n, head_width, tasks)
    n: int
    seq_jitter: int  # (seq_width - input_length) / 2
    head_jitter: list[int]  # (head_width - output_length) / 2, per head
    chunk_rows: int | None  # rows per HDF5 chunk of head_0 (None: contiguous)
    stored_revcomp: bool | None  # metadata: does the file hold reverse-complement pairs?
    stored_orders: list | None = field(default=None)


class H5Batcher(keras.utils.PyDataset):
    """Batches of one or more HDF5 training files (see the module docstring).

    Args:
        paths: one file or a list of files (their samples are concatenated).
        num_tasks: tasks per head, in head order (``head_0``, ``head_1``, ...).
        input_length, output_length: the model's input and output lengths.
        batch_size: samples per batch (the global batch when training on several devices).
        max_jitter: jitter offsets are drawn from 0..2*max_jitter; 0 gives centered windows.
            Each file must hold at least this much flank (its own jitter is derived from its
            shapes and may be larger: windows are then taken around its center).
        shuffle: permute the samples every epoch (else file order).
        seed: seed of the per-epoch random numbers.
        reverse_complement: reverse-complement each sample with probability 1/2 (on the fly).
        revcomp_orders: per head, the task order of reverse complements (see
            :func:`revcomp_task_order`); None means "auto" or the order stored in the file.
        batch_multiple: every batch's size is made a multiple of this (the number of devices
            in data-parallel training): a short last batch is cut down to a multiple (the few
            samples left over change every epoch), or padded when ``sample_weights``.
        sample_weights: yield ``(x, y, w)`` with w = 1 for real samples and 0 for padding
            (validation: the padded last batch keeps every sample and weighs it exactly once).
        drop_remainder: drop the last batch when it is short.
        cache_mb: budget of HDF5 chunk cache for all profile datasets together, in MiB.
        workers, max_queue_size: ``keras.utils.PyDataset`` prefetching (threads).
        name: a label for messages ("train-data", "val-data").
    """

    def __init__(
        self,
        paths,
        num_tasks: Sequence[int],
        input_length: int,
        output_length: int,
        batch_size: int,
        *,
        max_jitter: int = 0,
        shuffle: bool = False,
        seed: int = 0,
        reverse_complement: bool = False,
        revcomp_orders=None,
        batch_multiple: int = 1,
        sample_weights: bool = False,
        drop_remainder: bool = False,
        cache_mb: float = 256,
        workers: int = 1,
        max_queue_size: int = 10,
        name: str = "data",
    ):
        super().__init__(workers=max(1, int(workers)), use_multiprocessing=False, max_queue_size=max_queue_size)
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise BpflowError(f"{name}: no data files given")
        self.num_tasks = [int(t) for t in num_tasks]
        self.input_length = int(input_length)
        self.output_length = int(output_length)
        self.batch_size = int(batch_size)
        self.max_jitter = int(max_jitter)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.reverse_complement = bool(reverse_complement)
        self.batch_multiple = max(1, int(batch_multiple))
        self.sample_weights = bool(sample_weights)
        self.drop_remainder = bool(drop_remainder)
        self.cache_bytes = int(cache_mb * (1 << 20))
        self.name = name
        self._lock = threading.Lock()
        self._epoch = 0
        self._plan = None
        self._plan_epoch = None
        if self.batch_size < 1:
            raise BpflowError(f"{name}: batch size must be >= 1, got {batch_size}")

        num_datasets = len(self.paths) * len(self.num_tasks)
        self._cache_per_dataset = max(1 << 20, self.cache_bytes // max(1, num_datasets))
        self.sources: list[_Source] = []
        try:
            for path in self.paths:
                self.sources.append(self._open(path))
        except BaseException:
            self.close()
            raise
        self.num_samples = sum(s.n for s in self.sources)
        self._starts = np.cumsum([0] + [s.n for s in self.sources])
        self.revcomp_orders = self._resolve_orders(revcomp_orders)
        self._inverse_orders = [np.argsort(o) for o in self.revcomp_orders]
        if self.reverse_complement:
            stored = [s.path.name for s in self.sources if s.stored_revcomp]
            if stored:
                logger.warning(
                    "%s: %s already hold(s) reverse-complement pairs; reverse-complementing "
                    "on the fly as well only repeats that augmentation",
                    name,
                    ", ".join(stored),
                )
        self._sizes = self._batch_sizes()
        self._memspaces = [h5py.h5s.create_simple((self.output_length, t)) for t in self.num_tasks]
        self._blocks, self._window = self._shuffle_layout()

    # ------------------------------------------------------------------ opening and checks

    def _open(self, path: Path) -> _Source:
        data = TrainingDataset(path, self.name, rdcc_nbytes=self._cache_per_dataset, rdcc_nslots=100_003, rdcc_w0=0.0)
        where = data.where
        try:
            seq_ds = data.sequence
            n, seq_width = data.num_samples, data.sequence_width
            if n == 0:
                raise BpflowError(f"{where}: the file holds no samples")
            seq_jitter = self._flank(seq_width, self.input_length, "sequence", "input-length", where)
            heads, head_jitter = [], []
            data.require_heads(len(self.num_tasks))
            for h, tasks in enumerate(self.num_tasks):
                ds = data.head(h)
                if ds.shape[2] != tasks:
                    raise BpflowError(
                        f"{where}: 'head_{h}' has {ds.shape[2]} task(s) but the config's head {h} has num-tasks {tasks}"
                    )
                if ds.dtype.kind != "f":
                    raise BpflowError(f"{where}: 'head_{h}' must be a float dataset, got {ds.dtype}")
                heads.append(ds)
                head_jitter.append(
                    self._flank(int(ds.shape[1]), self.output_length, f"head_{h}", "output-length", where)
                )
            extra = data.extra_heads(len(self.num_tasks))
            if extra:
                logger.warning(
                    "%s: ignoring %s (the config has %d head(s))", where, ", ".join(extra), len(self.num_tasks)
                )
            chunks = heads[0].chunks
            chunk_rows = int(chunks[0]) if chunks else None
            # The sequence, in memory as uint8 (converted once if stored as another type).
            with reading(where, "sequence"):
                if seq_ds.dtype == np.uint8:
                    sequence = seq_ds[...]
                else:
                    sequence = np.empty(seq_ds.shape, dtype=np.uint8)
                    step = max(1, _SCAN_BLOCK_BYTES // max(1, seq_width * 4 * seq_ds.dtype.itemsize))
                    for r0 in range(0, n, step):
                        sequence[r0 : r0 + step] = seq_ds[r0 : r0 + step]
            if sequence.size and sequence.max() > 1:
                raise BpflowError(f"{where}: 'sequence' is not one-hot (values above 1)")
            return _Source(
                path,
                data,
                sequence,
                heads,
                n,
                seq_jitter,
                head_jitter,
                chunk_rows,
                data.stored_revcomp(),
                data.stored_task_orders(),
            )
        except BaseException:
            data.close()
            raise

    def _flank(self, width: int, length: int, what: str, key: str, where: str) -> int:
        flank = crop_offset(width, length, f"{where}: '{what}' (the model's {key} is {length})")
        if flank < self.max_jitter:
            raise BpflowError(
                f"{where}: '{what}' windows are {width} wide, so they allow a jitter of "
                f"at most {flank} around the {key} {length}, but max-jitter is "
                f"{self.max_jitter}"
            )
        return flank

    def _resolve_orders(self, orders) -> list[list[int]]:
        out = []
        for h, tasks in enumerate(self.num_tasks):
            given = orders[h] if orders is not None and h < len(orders) else None
            if given is None:
                stored = self.sources[0].stored_orders
                if stored is not None and h < len(stored) and stored[h] is not None:
                    given = stored[h]
            if given is None and tasks > 2 and not self.reverse_complement:
                out.append(list(range(tasks)))  # unused
                continue
            out.append(revcomp_task_order(given, tasks, f"{self.name}: head {h}"))
        return out

    def _batch_sizes(self) -> list[int]:
        n, b, m = self.num_samples, self.batch_size, self.batch_multiple
        if n < m:
            raise BpflowError(f"{self.name}: {n} sample(s) cannot be split over {m} devices")
        full, rest = divmod(n, b)
        sizes = [b] * full
        if rest and not self.drop_remainder:
            if self.sample_weights:
                sizes.append(rest)  # padded to a multiple of m when built
            elif rest - rest % m:
                sizes.append(rest - rest % m)
        if not sizes:
            raise BpflowError(f"{self.name}: {n} samples make no batch of size {b}")
        return sizes

    def _shuffle_layout(self):
        """Blocks of consecutive samples (HDF5 chunks) and the window size, or (None, None)
        for a full per-sample permutation."""
        if not self.shuffle:
            return None, None
        chunked = [s for s in self.sources if s.chunk_rows]
        if not chunked:
            return None, None
        fits = True
        max_chunk_bytes = 0
        for s in chunked:
            for ds in s.heads:
                row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
                if s.n * row_bytes > self._cache_per_dataset:
                    fits = False
                if ds.chunks:
                    max_chunk_bytes = max(max_chunk_bytes, ds.chunks[0] * row_bytes)
        if fits:
            return None, None
        blocks = []
        for f, s in enumerate(self.sources):
            rows = s.chunk_rows or s.n
            start = int(self._starts[f])
            blocks += [(start + r0, start + min(r0 + rows, s.n)) for r0 in range(0, s.n, rows)]
        window = max(1, self._cache_per_dataset // max(1, 2 * max_chunk_bytes))
        logger.info(
            "%s: profile data exceeds the %.0f MiB chunk cache: two-level shuffle over %d blocks, %d per window",
            self.name,
            self.cache_bytes / (1 << 20),
            len(blocks),
            window,
        )
        return np.asarray(blocks, dtype=np.int64), window

    # ------------------------------------------------------------------ epochs

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order, jitter and flips the following batches use."""
        with self._lock:
            self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def epoch_plan(self, epoch: int):
        """(order, offsets, flips) of ``epoch``: global sample ids in batch order, each
        position's jitter offset in 0..2*max_jitter, and its reverse-complement flag."""
        n = self.num_samples
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 0])
            if self._blocks is None:
                order = rng.permutation(n)
            else:
                parts = []
                perm = rng.permutation(len(self._blocks))
                for w in range(0, len(perm), self._window):
                    ids = np.concatenate([np.arange(a, b) for a, b in self._blocks[perm[w : w + self._window]]])
                    parts.append(rng.permutation(ids))
                order = np.concatenate(parts)
        else:
            order = np.arange(n)
        if self.max_jitter:
            offsets = np.random.default_rng([self.seed, epoch, 1]).integers(
                0, 2 * self.max_jitter + 1, size=n, dtype=np.int64
            )
        else:
            offsets = np.zeros(n, dtype=np.int64)
        if self.reverse_complement:
            flips = np.random.default_rng([self.seed, epoch, 2]).random(n) < 0.5
        else:
            flips = np.zeros(n, dtype=bool)
        return order, offsets, flips

    def _current_plan(self):
        with self._lock:
            if self._plan_epoch != self._epoch:
                self._plan = self.epoch_plan(self._epoch)
                self._plan_epoch = self._epoch
            return self._plan

    # ------------------------------------------------------------------ PyDataset

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def num_batches(self) -> int:
        return len(self._sizes)

    def batch_ids(self, index: int):
        """Global sample ids, jitter offsets and flips of batch ``index`` in the current epoch."""
        if not 0 <= index < len(self._sizes):
            raise IndexError(f"{self.name}: batch {index} out of range (0..{len(self._sizes) - 1})")
        order, offsets, flips = self._current_plan()
        start = index * self.batch_size
        stop = start + self._sizes[index]
        return order[start:stop], offsets[start:stop], flips[start:stop]

    def __getitem__(self, index: int):
        ids, offsets, flips = self.batch_ids(index)
        k = len(ids)
        pad = (-k) % self.batch_multiple if self.sample_weights else 0
        total = k + pad
        x = np.empty((total, self.input_length, 4), dtype=np.float32)
        profiles = [np.empty((total, self.output_length, t), dtype=np.float32) for t in self.num_tasks]
        files = np.searchsorted(self._starts, ids, side="right") - 1
        rows = ids - self._starts[files]
        src, h = None, 0
        try:
            for j in np.lexsort((rows, files)):  # file order, then row order: cache-friendly reads
                src = self.sources[files[j]]
                row, off = int(rows[j]), int(offsets[j])
                s0 = src.seq_jitter - self.max_jitter + off
                x[j] = src.sequence[row, s0 : s0 + self.input_length]
                for h, ds in enumerate(src.heads):
                    # h5py's low-level read of one window: ~3x faster than slicing the dataset
                    p0 = src.head_jitter[h] - self.max_jitter + off
                    space = ds.id.get_space()
                    space.select_hyperslab((row, p0, 0), (1, self.output_length, self.num_tasks[h]))
                    ds.id.read(self._memspaces[h], space, profiles[h][j])
        except (OSError, RuntimeError) as err:
            if src is None:
                raise
            raise read_error(src.data.where, f"head_{h}", err) from None
        if flips.any():
            sel = np.flatnonzero(flips)
            x[sel] = x[sel, ::-1, ::-1]
            for h, prof in enumerate(profiles):
                prof[sel] = prof[sel, ::-1][:, :, self._inverse_orders[h]]
        if pad:
            x[k:] = x[np.arange(pad) % k]
            for prof in profiles:
                prof[k:] = prof[np.arange(pad) % k]
        counts = [np.log1p(p.sum(axis=(1, 2), dtype=np.float64)).astype(np.float32)[:, None] for p in profiles]
        y = tuple(profiles + counts)
        if self.sample_weights:
            w = np.zeros(total, dtype=np.float32)
            w[:k] = 1.0
            return x, y, w
        return x, y

    # ------------------------------------------------------------------ scanning

    def scan(self) -> list[HeadStats]:
        """Read every profile once (in blocks): fail on NaN, inf or negative values with the
        file, head and sample; return per-head totals over the central output windows."""
        totals = [[] for _ in self.num_tasks]
        for src in self.sources:
            for h, ds in enumerate(src.heads):
                row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
                step = ds.chunks[0] if ds.chunks else 1
                step *= max(1, _SCAN_BLOCK_BYTES // max(1, step * row_bytes))
                c0 = src.head_jitter[h]
                for r0 in range(0, src.n, step):
                    with reading(src.data.where, f"head_{h}"):
                        block = ds[r0 : r0 + step]
                    bad = ~np.isfinite(block)
                    if bad.any():
                        i = int(np.argwhere(bad)[0][0]) + r0
                        raise BpflowError(
                            f"{self.name} {src.path}: head_{h} has NaN or infinite values "
                            f"(first in sample {i}); fix the bigWig or the data preparation"
                        )
                    if block.size and block.min() < 0:
                        i = int(np.argwhere(block < 0)[0][0]) + r0
                        raise BpflowError(
                            f"{self.name} {src.path}: head_{h} has negative values (first in "
                            f"sample {i}, minimum {float(block.min()):g}); the multinomial "
                            "loss needs counts >= 0 (use absolute values of minus-strand "
                            "bigWigs)"
                        )
                    window = block[:, c0 : c0 + self.output_length, :]
                    totals[h].append(window.sum(axis=(1, 2), dtype=np.float64))
        stats = []
        for h in range(len(self.num_tasks)):
            t = np.concatenate(totals[h])
            stats.append(
                HeadStats(int(t.size), float(t.mean()), float(np.median(t)), float(t.max()), int((t == 0).sum()))
            )
        return stats

    # ------------------------------------------------------------------ misc

    def describe(self) -> str:
        files = ", ".join(str(p) for p in self.paths)
        return (
            f"{self.name}: {self.num_samples} samples from {files}; {len(self)} batches of "
            f"{self.batch_size}; jitter {self.max_jitter}; "
            f"{'shuffled' if self.shuffle else 'in file order'}"
            f"{'; reverse complement on the fly' if self.reverse_complement else ''}"
        )

    def close(self) -> None:
        for src in getattr(self, "sources", []):
            try:
                src.data.close()
            except Exception:  # pragma: no cover - closing twice or during interpreter exit
                pass

    def __del__(self):
        self.close()
