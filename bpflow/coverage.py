"""Efficient reading of FASTA sequence, bigWig coverage and BED regions.

The readers fetch *merged blocks*: windows on one chromosome that lie close together are
read with one request covering all of them, and the windows are sliced out of the block.
That is much faster than one small request per window when windows are dense (training
regions, tiled chromosomes), and never reads more than ``max_gap`` extra bases between two
windows.

Coordinates are 0-based, half-open (BED style) throughout.

Handles (:class:`FastaFile`, :class:`BigWigFile`) are not thread-safe: open one per thread.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bpflow.genome import one_hot_encode
from bpflow.utils import BpflowError

# Two windows closer than this are read with one request (the bases between them are read
# and thrown away).  Measured: a pyBigWig request costs ~60 us, a base in a block ~2-3 ns;
# pyfaidx is similar, so the break-even gap is ~20 kb.
DEFAULT_MAX_GAP = 16_384
# No block is longer than this (bounds memory: 4 bytes per base per bigWig block), unless a
# single window is longer.
DEFAULT_MAX_SPAN = 4_194_304


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A span of one chromosome read at once, and the windows (by index) inside it."""

    start: int
    end: int
    index: np.ndarray  # indices into the caller's window arrays, sorted by window start


def plan_blocks(starts: Sequence[int] | np.ndarray, ends: Sequence[int] | np.ndarray,
                max_gap: int = DEFAULT_MAX_GAP, max_span: int = DEFAULT_MAX_SPAN) -> list[Block]:
    """Group windows ``[starts[i], ends[i])`` on one chromosome into merged read blocks.

    Windows are taken in order of start; a window joins the current block when it begins at
    most ``max_gap`` bases after the block's end and the block stays within ``max_span``
    bases (a single longer window gets a block of its own).  Every window lies inside its
    block.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError("starts and ends must be 1-D arrays of the same length")
    if len(starts) == 0:
        return []
    order = np.argsort(starts, kind="stable")
    blocks: list[Block] = []
    first = 0
    b_start = int(starts[order[0]])
    b_end = int(ends[order[0]])
    for k in range(1, len(order)):
        i = order[k]
        s, e = int(starts[i]), int(ends[i])
        if s <= b_end + max_gap and max(b_end, e) - b_start <= max_span:
            b_end = max(b_end, e)
            continue
        blocks.append(Block(b_start, b_end, order[first:k]))
        first, b_start, b_end = k, s, e
    blocks.append(Block(b_start, b_end, order[first:]))
    return blocks


def gather_windows(block: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """Copy windows ``block[o:o + width]`` for each offset into an (n, width, ...) array."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.empty((len(offsets), width) + block.shape[1:], dtype=block.dtype)
    for k, o in enumerate(offsets):
        out[k] = block[o:o + width]
    return out


# --------------------------------------------------------------------------------------
# FASTA
# --------------------------------------------------------------------------------------


class FastaFile:
    """Random access to a FASTA file through its ``.fai`` index (built by pyfaidx if missing).

    ``chrom_sizes`` lists the chromosomes in file order.
    """

    def __init__(self, path: str | Path):
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise BpflowError(f"{self.path}: FASTA file not found")
        try:
            self._faidx = pyfaidx.Faidx(str(self.path), as_raw=True, sequence_always_upper=False)
        except Exception as err:  # pyfaidx raises several types for malformed/unindexable files
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BpflowError(f"{self.path}: cannot read this FASTA file: {msg}") from None
        self.chrom_sizes: dict[str, int] = {name: int(rec.rlen) for name, rec in self._faidx.index.items()}

    def close(self) -> None:
        self._faidx.close()

    def __enter__(self) -> "FastaFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, chrom: str, start: int, end: int, pad: bool) -> int:
        size = self.chrom_sizes.get(chrom)
        if size is None:
            raise BpflowError(f"{self.path}: chromosome {chrom} is not in the FASTA file")
        if start > end:
            raise BpflowError(f"{self.path}: invalid interval {chrom}:{start}-{end}")
        if not pad and (start < 0 or end > size):
            raise BpflowError(f"{self.path}: {chrom}:{start}-{end} runs off the end of {chrom} (length {size})")
        return size

    def fetch(self, chrom: str, start: int, end: int, pad: bool = False) -> bytes:
        """Bases ``[start, end)`` as ASCII bytes (case kept).  With ``pad``, positions outside
        the chromosome read as ``N``; otherwise they are an error."""
        start, end = int(start), int(end)
        size = self._check(chrom, start, end, pad)
        lo, hi = max(start, 0), min(end, size)
        seq = b""
        if hi > lo:
            seq = self._faidx.fetch(chrom, lo + 1, hi).encode("latin-1")
            if len(seq) != hi - lo:  # a truncated or inconsistent .fai
                raise BpflowError(f"{self.path}: read {len(seq)} bases for {chrom}:{lo}-{hi}; "
                                  "is the .fai index stale?")
        if pad and (start < lo or end > hi):
            left = b"N" * (min(lo, end) - start)
            right = b"N" * (end - max(hi, start))
            seq = left + seq + right
        return seq

    def one_hot(self, chrom: str, start: int, end: int, pad: bool = False) -> np.ndarray:
        """(end - start, 4) uint8 one-hot sequence (N and other bases are zero rows)."""
        return one_hot_encode(self.fetch(chrom, start, end, pad=pad))


def fasta_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Chromosome sizes of a FASTA file, in file order."""
    with FastaFile(path) as fa:
        return dict(fa.chrom_sizes)


def read_sequence_windows(fasta: FastaFile, chrom: str, starts: Sequence[int] | np.ndarray, width: int,
                          max_gap: int = DEFAULT_MAX_GAP, max_span: int = DEFAULT_MAX_SPAN,
                          pad: bool = False) -> np.ndarray:
    """Bases of windows ``[s, s + width)`` on ``chrom`` as an (n, width) uint8 array of ASCII
    codes, read in merged blocks.  Use :func:`one_hot_windows` to encode them."""
    starts = np.asarray(starts, dtype=np.int64)
    out = np.empty((len(starts), width), dtype=np.uint8)
    for block in plan_blocks(starts, starts + width, max_gap, max_span):
        raw = np.frombuffer(fasta.fetch(chrom, block.start, block.end, pad=pad), dtype=np.uint8)
        out[block.index] = gather_windows(raw, starts[block.index] - block.start, width)
    return out


# bpflow.genome's one-hot table, one 4-byte row per ASCII code, as uint32 so that encoding is
# a single gather of 4-byte items (several times faster than a (256, 4) fancy index).
_ONE_HOT_U32 = np.ascontiguousarray(one_hot_encode(bytes(range(256)))).view(np.uint32).ravel()


def one_hot_windows(byte_windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One-hot encode an (n, width) array of ASCII codes into (n, width, 4) uint8 (columns
    A, C, G, T; other bases are zero rows), into ``out`` when given."""
    byte_windows = np.asarray(byte_windows, dtype=np.uint8)
    if out is None:
        out = np.empty(byte_windows.shape + (4,), dtype=np.uint8)
    if out.flags.c_contiguous:
        np.take(_ONE_HOT_U32, byte_windows, out=out.view(np.uint32)[..., 0])
    else:
        out[...] = _ONE_HOT_U32[byte_windows].view(np.uint8).reshape(byte_windows.shape + (4,))
    return out


def reverse_complement_windows(one_hot: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Reverse complement of (n, width, 4) one-hot windows (flip positions and ACGT -> TGCA),
    into ``out`` when given; same result as ``one_hot[:, ::-1, ::-1]``."""
    one_hot = np.ascontiguousarray(one_hot, dtype=np.uint8)
    # A row's 4 bytes as one uint32: reversing the bytes swaps A<->T and C<->G.
    rc = one_hot.view(np.uint32)[:, ::-1, 0].byteswap()
    if out is None:
        return rc.view(np.uint8).reshape(one_hot.shape)
    out[...] = rc.view(np.uint8).reshape(one_hot.shape)
    return out


_ACGT = np.zeros(256, dtype=bool)
_GC = np.zeros(256, dtype=bool)
for _b in b"ACGTacgt":
    _ACGT[_b] = True
for _b in b"GCgc":
    _GC[_b] = True


def acgt_mask(byte_windows: np.ndarray) -> np.ndarray:
    """Boolean array: which positions of ASCII-coded sequence are A, C, G or T (any case)."""
    return _ACGT[np.asarray(byte_windows, dtype=np.uint8)]


def gc_mask(byte_windows: np.ndarray) -> np.ndarray:
    """Boolean array: which positions of ASCII-coded sequence are G or C (any case)."""
    return _GC[np.asarray(byte_windows, dtype=np.uint8)]


# --------------------------------------------------------------------------------------
# bigWig
# --------------------------------------------------------------------------------------


class BigWigFile:
    """A bigWig opened for reading; values come back as float32 with NaN (no data) as 0."""

    def __init__(self, path: str | Path):
        import pyBigWig

        self.path = Path(path)
        if not self.path.is_file():
            raise BpflowError(f"{self.path}: bigWig file not found")
        try:
            self._bw = pyBigWig.open(str(self.path))
        except RuntimeError:
            self._bw = None
        if self._bw is None:
            raise BpflowError(f"{self.path}: not a readable bigWig file")
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
        the chromosome read as 0; otherwise they are an error."""
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
        vals = self._bw.values(chrom, lo, hi, numpy=True)
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
        if lo == start and hi == end:
            return vals
        out = np.zeros(end - start, dtype=np.float32)
        out[lo - start:hi - start] = vals
        return out


def bigwig_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Chromosome sizes of a bigWig file."""
    with BigWigFile(path) as bw:
        return dict(bw.chrom_sizes)


def read_bigwig_windows(bigwig: BigWigFile, chrom: str, starts: Sequence[int] | np.ndarray, width: int,
                        max_gap: int = DEFAULT_MAX_GAP, max_span: int = DEFAULT_MAX_SPAN,
                        pad: bool = False, negative: str = "error") -> np.ndarray:
    """Coverage of windows ``[s, s + width)`` on ``chrom`` as an (n, width) float32 array, read
    in merged blocks; NaN -> 0.

    ``negative``: what to do with negative values inside a window: ``"error"`` (a BpflowError
    naming the file, position and window), ``"abs"`` (take absolute values) or ``"keep"``.
    """
    if negative not in ("error", "abs", "keep"):
        raise ValueError(f"negative must be 'error', 'abs' or 'keep', not {negative!r}")
    starts = np.asarray(starts, dtype=np.int64)
    out = np.empty((len(starts), width), dtype=np.float32)
    for block in plan_blocks(starts, starts + width, max_gap, max_span):
        vals = bigwig.values(chrom, block.start, block.end, pad=pad)
        out[block.index] = gather_windows(vals, starts[block.index] - block.start, width)
    if negative == "abs":
        np.abs(out, out=out)
    elif negative == "error" and out.size:
        bad = out < 0
        if bad.any():
            k, pos = np.argwhere(bad)[0]
            s = int(starts[k])
            raise BpflowError(
                f"{bigwig.path}: negative coverage {float(out[k, pos]):g} at {chrom}:{s + int(pos)} "
                f"(window {chrom}:{s}-{s + width}); set \"use-absolute-values\": true for this head "
                "if its minus-strand values are stored negative")
    return out


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


# --------------------------------------------------------------------------------------
# BED
# --------------------------------------------------------------------------------------


@dataclass
class BedRegions:
    """Regions of BED files as columns.  ``summit`` is the narrowPeak summit as an absolute
    position, or -1 when the line has none.  ``file`` (index into ``paths``) and ``line`` say
    where each region came from (:meth:`where`).  Chromosome names are shared string objects
    and the optional columns can be skipped, so millions of regions stay small."""

    chrom: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    start: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    end: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    name: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    score: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    strand: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    summit: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    file: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    line: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)

    def where(self, k: int) -> str:
        """``file:line`` of region k (for error messages)."""
        return f"{self.paths[int(self.file[k])]}:{int(self.line[k])}"

    def subset(self, index) -> "BedRegions":
        index = np.asarray(index, dtype=np.int64)
        return BedRegions(self.chrom[index], self.start[index], self.end[index], self.name[index],
                          self.score[index], self.strand[index], self.summit[index], self.file[index],
                          self.line[index], list(self.paths))

    @staticmethod
    def concat(parts: Sequence["BedRegions"]) -> "BedRegions":
        parts = list(parts)
        if not parts:
            return BedRegions()
        offsets = np.cumsum([0] + [len(p.paths) for p in parts[:-1]])

        def cat(attr, dtype):
            return np.concatenate([getattr(p, attr) for p in parts]).astype(dtype, copy=False)

        return BedRegions(cat("chrom", object), cat("start", np.int64), cat("end", np.int64),
                          cat("name", object), cat("score", object), cat("strand", object),
                          cat("summit", np.int64),
                          np.concatenate([p.file + o for p, o in zip(parts, offsets)]).astype(np.int32),
                          cat("line", np.int64), [x for p in parts for x in p.paths])


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt")
    return open(path)


def read_bed(path: str | Path, extra_columns: bool = True) -> BedRegions:
    """Read a BED file (3+ columns; ``.gz`` allowed).  Header, ``track``/``browser`` and ``#``
    lines are skipped.  Column 10 of narrowPeak (summit offset from start, -1 = none) sets
    ``summit``.  Malformed lines are a BpflowError naming file and line.  Without
    ``extra_columns`` the name, score and strand columns read as ".", "0", "."."""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{path}: BED file not found")
    chroms, starts, ends, names, scores, strands, summits, lines = [], [], [], [], [], [], [], []
    interned: dict[str, str] = {}
    try:
        with _open_text(path) as fh:
            for lineno, text in enumerate(fh, 1):
                text = text.rstrip("\r\n")
                if not text.strip() or text.startswith(("#", "track", "browser")):
                    continue
                cols = text.split("\t") if "\t" in text else text.split()
                if len(cols) < 3:
                    raise BpflowError(f"{path}:{lineno}: a BED line needs at least 3 columns: {text[:80]!r}")
                try:
                    start, end = int(cols[1]), int(cols[2])
                except ValueError:
                    raise BpflowError(f"{path}:{lineno}: start and end must be integers: {text[:80]!r}") from None
                if start < 0 or end <= start:
                    raise BpflowError(f"{path}:{lineno}: invalid interval {cols[0]}:{start}-{end}")
                summit = -1
                if len(cols) >= 10:
                    try:
                        offset = int(cols[9])
                    except ValueError:
                        raise BpflowError(f"{path}:{lineno}: narrowPeak column 10 (summit offset) must be an "
                                          f"integer: {cols[9]!r}") from None
                    if offset >= 0:
                        if offset >= end - start:
                            raise BpflowError(f"{path}:{lineno}: summit offset {offset} lies outside the peak "
                                              f"{cols[0]}:{start}-{end}")
                        summit = start + offset
                chroms.append(interned.setdefault(cols[0], cols[0]))
                starts.append(start)
                ends.append(end)
                if extra_columns:
                    names.append(cols[3] if len(cols) > 3 else ".")
                    scores.append(cols[4] if len(cols) > 4 else "0")
                    strands.append(cols[5] if len(cols) > 5 else ".")
                summits.append(summit)
                lines.append(lineno)
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise BpflowError(f"{path}: cannot read this BED file: {err}") from None
    n = len(starts)

    def column(values: list, default: str | None = None) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = values if default is None or extra_columns else default
        return out

    return BedRegions(column(chroms), np.array(starts, dtype=np.int64),
                      np.array(ends, dtype=np.int64),
                      column(names, "."), column(scores, "0"), column(strands, "."),
                      np.array(summits, dtype=np.int64), np.zeros(n, dtype=np.int32),
                      np.array(lines, dtype=np.int64), [str(path)])


def write_bed(path: str | Path, chroms: Sequence[str], starts: Sequence[int], ends: Sequence[int],
              *extra_columns: Sequence) -> None:
    """Write a BED file (tab-separated) atomically; extra columns follow chrom/start/end."""
    from bpflow.utils import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            for row in zip(chroms, starts, ends, *extra_columns):
                fh.write("\t".join(str(x) for x in row))
                fh.write("\n")


def iter_chrom_groups(chroms: Sequence[str] | np.ndarray, order: Sequence[str] | None = None
                      ) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (chrom, indices) for each chromosome present, in ``order`` when given (others
    after it, by name), else by name."""
    chroms = np.asarray(chroms, dtype=object)
    if len(chroms) == 0:
        return
    names, inverse = np.unique(chroms.astype(str), return_inverse=True)
    rank = {c: i for i, c in enumerate(order or [])}
    for k in sorted(range(len(names)), key=lambda j: (rank.get(names[j], math.inf), names[j])):
        yield str(names[k]), np.flatnonzero(inverse == k)
