"""bigWig coverage: reading windows (:class:`BigWigFile`) and writing tracks.

Values read come back as float32 with NaN as 0: pyBigWig reports bases without data as NaN,
and a NaN stored in the file cannot be told apart from them, so both read as 0.  Infinite
values (``inf``, ``-inf``) are an error naming the file, chromosome and position, whichever
step reads them.  Negative values are kept by :meth:`BigWigFile.values`; the windows that
prepare-regions and prepare-data read refuse them, naming the position, unless the head sets
``use-absolute-values`` (:meth:`BigWigFile.windows`).

Writers are created on a temporary path and renamed when complete (:func:`bigwig_writers`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bpflow.formats.blocks import DEFAULT_MAX_GAP, DEFAULT_MAX_SPAN, read_windows
from bpflow.utils import BpflowError, atomic_output, read_head

# The first four bytes of a bigWig / bigBed file (magic number, either byte order).
_BIGWIG_MAGIC = (b"\x26\xfc\x8f\x88", b"\x88\x8f\xfc\x26")
_BIGBED_MAGIC = (b"\xeb\xf2\x89\x87", b"\x87\x89\xf2\xeb")

# Files pyBigWig has opened once, by identity: later opens (one per worker thread) skip the
# redirection of C-level stderr that keeps libBigWig's messages about bad files off the log.
_OPENED: set[tuple] = set()
_OPEN_LOCK = threading.Lock()


def _sniff(path: Path) -> None:
    """A one-line error unless the file starts like a bigWig."""
    head = read_head(path, 64, "bigWig file")
    if head[:4] in _BIGBED_MAGIC:
        raise BpflowError(f"{path}: is a bigBed, not a bigWig file")
    if head[:4] in _BIGWIG_MAGIC:
        return
    if head[:2] == b"\x1f\x8b":
        raise BpflowError(f"{path}: gzip-compressed, not a bigWig file (bigWigs are compressed inside; decompress it)")
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        raise BpflowError(
            f"{path}: a text file, not a bigWig (a bedGraph or WIG? convert it with bedGraphToBigWig or wigToBigWig)"
        )
    raise BpflowError(f"{path}: not a bigWig file")


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    """Send what C code writes to file descriptor 2 to a scratch file for the block."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _open_bigwig(path: Path):
    """pyBigWig handle of a readable bigWig, or None; libBigWig's own complaints about a
    broken file are kept off stderr the first time a file is opened."""
    import pyBigWig

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _OPEN_LOCK:
        known = key in _OPENED
    quiet = contextlib.nullcontext() if known else _quiet_c_stderr()
    with quiet:
        try:
            bw = pyBigWig.open(str(path))
        except RuntimeError:
            bw = None
    if bw is not None and not known:
        with _OPEN_LOCK:
            _OPENED.add(key)
    return bw


class BigWigFile:
    """A bigWig opened for reading; values come back as float32 with NaN (no data) as 0."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise BpflowError(f"{self.path}: bigWig file not found")
        _sniff(self.path)
        self._bw = _open_bigwig(self.path)
        if self._bw is None:
            raise BpflowError(f"{self.path}: not a readable bigWig file (truncated or corrupt?)")
        if not self._bw.isBigWig():
            self._bw.close()
            raise BpflowError(f"{self.path}: is a bigBed, not a bigWig file")
        self.chrom_sizes: dict[str, int] = {k: int(v) for k, v in self._bw.chroms().items()}

    def close(self) -> None:
        if self._bw is not None:
            self._bw.close()
            self._bw = None

    def __enter__(self) -> "BigWigFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def values(self, chrom: str, start: int, end: int, pad: bool = False) -> np.ndarray:
        """Coverage at ``[start, end)`` as float32, NaN -> 0.  With ``pad``, positions outside
        the chromosome read as 0; otherwise they are an error.  An infinite value is an error
        naming its position."""
        start, end = int(start), int(end)
        size = self.chrom_sizes.get(chrom)
        if size is None:
            raise BpflowError(f"{self.path}: chromosome {chrom} is not in this bigWig")
        if start > end:
            raise BpflowError(f"{self.path}: invalid interval {chrom}:{start}-{end}")
        if not pad and (start < 0 or end > size):
            raise BpflowError(f"{self.path}: {chrom}:{start}-{end} runs off the end of {chrom} (length {size})")
        lo, hi = max(start, 0), min(end, size)
        if hi <= lo:  # entirely outside the chromosome (pad) or empty
            return np.zeros(end - start, dtype=np.float32)
        try:
            vals = self._bw.values(chrom, lo, hi, numpy=True)
        except RuntimeError:
            raise BpflowError(f"{self.path}: cannot read {chrom}:{lo}-{hi}; the file is truncated or corrupt") from None
        if len(vals) != hi - lo:
            if len(vals):
                raise BpflowError(f"{self.path}: read {len(vals)} values for {chrom}:{lo}-{hi}")
            vals = np.zeros(hi - lo, dtype=np.float32)  # pyBigWig returns nothing for a bigWig without data
        vals = np.asarray(vals, dtype=np.float32)
        # NaN (no data) -> 0.  fmax(x, 0) does that in one pass when nothing is negative.
        if (vals < 0).any():
            vals[np.isnan(vals)] = 0.0
        else:
            np.fmax(vals, np.float32(0), out=vals)
        check_finite(vals, self.path, chrom, lo)
        if lo == start and hi == end:
            return vals
        out = np.zeros(end - start, dtype=np.float32)
        out[lo - start : hi - start] = vals
        return out

    def windows(
        self,
        chrom: str,
        starts: Sequence[int] | np.ndarray,
        width: int,
        max_gap: int = DEFAULT_MAX_GAP,
        max_span: int = DEFAULT_MAX_SPAN,
        pad: bool = False,
        negative: str = "error",
    ) -> np.ndarray:
        """Coverage of windows ``[s, s + width)`` on ``chrom`` as an (n, width) float32 array,
        read in merged blocks; NaN -> 0.

        ``negative``: what to do with negative values inside a window: ``"error"`` (a
        BpflowError naming the file, position and window), ``"abs"`` (take absolute values) or
        ``"keep"``.
        """
        if negative not in ("error", "abs", "keep"):
            raise ValueError(f"negative must be 'error', 'abs' or 'keep', not {negative!r}")
        starts = np.asarray(starts, dtype=np.int64)
        out = read_windows(lambda a, b: self.values(chrom, a, b, pad=pad), starts, width, np.float32, max_gap, max_span)
        if negative == "abs":
            np.abs(out, out=out)
        elif negative == "error" and out.size:
            bad = out < 0
            if bad.any():
                k, pos = np.argwhere(bad)[0]
                s = int(starts[k])
                raise BpflowError(
                    f"{self.path}: negative coverage {float(out[k, pos]):g} at {chrom}:{s + int(pos)} "
                    f'(window {chrom}:{s}-{s + width}); set "use-absolute-values": true for this head '
                    "if its minus-strand values are stored negative"
                )
        return out


def check_finite(values: np.ndarray, path, chrom: str, start: int) -> None:
    """Raise a one-line error naming ``path`` and the position of the first infinite (or
    NaN) value of a chromosome's ``values`` read from ``start`` on.

    Used on every read of :class:`BigWigFile`; a caller that gets values elsewhere (e.g.
    pyBigWig's ``stats``) checks them with this function.  One float32 sum covers the array:
    it is finite unless a value is not (or, rarely, the sum overflows: then look closer).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(values, axis=None)
    if np.isfinite(total):
        return
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        k = int(bad[0])
        more = f" ({len(bad)} such values in {chrom}:{start}-{start + len(values)})" if len(bad) > 1 else ""
        raise BpflowError(
            f"{path}: value {float(values[k])} at {chrom}:{start + k}{more}; bigWig values must be finite "
            "numbers (NaN reads as no data, 0)"
        )


def check_chrom_sizes(
    path, sizes: dict[str, int], genome, genome_sizes: dict[str, int], chroms=None, where: str = ""
) -> None:
    """Raise a one-line error when a chromosome (of ``chroms``, or every one in both) has one
    length in the bigWig ``path`` and another in the FASTA ``genome``: the bigWig was made
    for another assembly, and its positions do not match the sequence.  ``where`` (e.g.
    "used at peaks.bed:3") is added after the chromosome when given."""
    names = genome_sizes if chroms is None else chroms
    for chrom in names:
        if chrom in sizes and chrom in genome_sizes and int(sizes[chrom]) != int(genome_sizes[chrom]):
            at = f" ({where})" if where else ""
            raise BpflowError(
                f"{path}: chromosome {chrom}{at} is {sizes[chrom]} bp long here but {genome_sizes[chrom]} bp "
                f"in {genome}; the bigWig was made for another genome assembly"
            )


def bigwig_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Chromosome sizes of a bigWig file."""
    with BigWigFile(path) as bw:
        return dict(bw.chrom_sizes)


def window_sums(values: np.ndarray, offsets: np.ndarray, widths: np.ndarray | int) -> np.ndarray:
    """Sums of ``values[o:o + w]`` (over the last axis of an (n, L) window array) for one
    offset/width per row or shared ones; exact in float64."""
    values = np.asarray(values)
    csum = np.zeros(values.shape[:-1] + (values.shape[-1] + 1,), dtype=np.float64)
    np.cumsum(values, axis=-1, dtype=np.float64, out=csum[..., 1:])
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.int64), values.shape[:-1])
    ends = offsets + np.broadcast_to(np.asarray(widths, dtype=np.int64), values.shape[:-1])
    take = np.take_along_axis
    return take(csum, ends[..., None], axis=-1)[..., 0] - take(csum, offsets[..., None], axis=-1)[..., 0]


# ----------------------------------------------------------------------------------------------
# Writing


@contextlib.contextmanager
def bigwig_writers(
    paths: Sequence, chrom_sizes: Sequence[tuple[str, int]], max_zooms: Sequence[int] | int = 10
) -> Iterator[list]:
    """Open one pyBigWig writer per path (on a temporary name, renamed when the block ends
    without an error), each with the same header; yield the writers in order."""
    import pyBigWig

    zooms = [max_zooms] * len(paths) if isinstance(max_zooms, int) else list(max_zooms)
    header = [(str(n), int(s)) for n, s in chrom_sizes]
    with contextlib.ExitStack() as stack:
        writers = []
        try:
            for path, zoom in zip(paths, zooms):
                tmp = stack.enter_context(atomic_output(path))
                bw = pyBigWig.open(str(tmp), "w")
                if bw is None:
                    raise BpflowError(f"{path}: cannot write a bigWig here")
                writers.append(bw)
                bw.addHeader(header, maxZooms=zoom)
            yield writers
        finally:
            for bw in writers:
                bw.close()


def add_track(bw, chrom: str, values: np.ndarray, start: int = 0) -> None:
    """One chromosome's values from ``start`` on: dense tracks as fixed-step entries, sparse
    ones as their non-zero bases only (zeros are left empty)."""
    values = np.asarray(values, dtype=np.float32).astype(np.float64)
    nonzero = np.flatnonzero(values)
    if len(nonzero) == 0:
        return
    if len(nonzero) > len(values) // 2:
        bw.addEntries(chrom, int(start), values=values, span=1, step=1)
    else:
        bw.addEntries(chrom, (nonzero + start).astype(np.int64), values=values[nonzero], span=1)


class TrackAccumulator:
    """Base-by-base mean of overlapping windows on one chromosome, flushed to bigWig writers
    (one per track) in order.  Windows must arrive sorted by start; bases no window covers
    are left empty."""

    def __init__(self, writers, chrom: str, base: int = 0):
        self.writers = writers
        self.chrom = chrom
        self.base = int(base)  # genome position of buffer row 0
        self.sums = np.zeros((0, len(writers)))
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, start: int, values: np.ndarray) -> None:
        """Add a window's (length, tracks) values starting at genome position ``start``."""
        if start < self.base:
            raise RuntimeError("internal error: windows must arrive sorted by start")
        end = start + len(values) - self.base
        if end > len(self.counts):
            grow = max(end, 2 * len(self.counts))
            self.sums = np.concatenate([self.sums, np.zeros((grow - len(self.counts), self.sums.shape[1]))])
            self.counts = np.concatenate([self.counts, np.zeros(grow - len(self.counts), np.int64)])
        self.sums[start - self.base : end] += values
        self.counts[start - self.base : end] += 1

    def flush(self, upto: int | None = None) -> None:
        """Write every base before ``upto`` (all when None) and drop it from the buffer."""
        k = len(self.counts) if upto is None else max(0, min(upto - self.base, len(self.counts)))
        if k == 0:
            return
        counts = self.counts[:k]
        covered = counts > 0
        if covered.any():
            edges = np.flatnonzero(np.diff(np.concatenate([[0], covered.view(np.int8), [0]])))
            means = self.sums[:k] / np.maximum(counts, 1)[:, None]
            for run_start, run_stop in zip(edges[::2], edges[1::2]):
                for t, writer in enumerate(self.writers):
                    writer.addEntries(
                        self.chrom,
                        int(self.base + run_start),
                        values=np.ascontiguousarray(means[run_start:run_stop, t], dtype=np.float64),
                        span=1,
                        step=1,
                    )
        self.sums = self.sums[k:].copy()
        self.counts = self.counts[k:].copy()
        self.base += k
