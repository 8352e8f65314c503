"""Genome FASTA: random access through the ``.fai`` index (built by pyfaidx if missing).

Coordinates are 0-based, half-open.  A :class:`FastaFile` is not thread-safe: open one per
thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bpflow.formats.blocks import DEFAULT_MAX_GAP, DEFAULT_MAX_SPAN, read_windows
from bpflow.formats.sequence import one_hot_encode, one_hot_windows
from bpflow.utils import BpflowError, first_line


class FastaFile:
    """A FASTA file opened for random access; ``chrom_sizes`` lists the chromosomes in file
    order, ``chrom_names`` their names."""

    def __init__(self, path: str | Path):
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise BpflowError(f"{self.path}: FASTA file not found")
        try:
            self._faidx = pyfaidx.Faidx(str(self.path), as_raw=True, sequence_always_upper=False)
        except Exception as err:  # pyfaidx raises several types for malformed/unindexable files
            raise BpflowError(f"{self.path}: cannot read this FASTA file: {first_line(err)}") from None
        self.chrom_sizes: dict[str, int] = {name: int(rec.rlen) for name, rec in self._faidx.index.items()}

    @property
    def chrom_names(self) -> list[str]:
        return list(self.chrom_sizes)

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
                raise BpflowError(f"{self.path}: read {len(seq)} bases for {chrom}:{lo}-{hi}; is the .fai index stale?")
        if pad and (start < lo or end > hi):
            left = b"N" * (min(lo, end) - start)
            right = b"N" * (end - max(hi, start))
            seq = left + seq + right
        return seq

    def one_hot(self, chrom: str, start: int, end: int, pad: bool = False) -> np.ndarray:
        """(end - start, 4) uint8 one-hot sequence (N and other bases are zero rows)."""
        return one_hot_encode(self.fetch(chrom, start, end, pad=pad))

    def windows(
        self,
        chrom: str,
        starts: Sequence[int] | np.ndarray,
        width: int,
        max_gap: int = DEFAULT_MAX_GAP,
        max_span: int = DEFAULT_MAX_SPAN,
        pad: bool = False,
    ) -> np.ndarray:
        """Bases of windows ``[s, s + width)`` on ``chrom`` as an (n, width) uint8 array of
        ASCII codes, read in merged blocks (:mod:`bpflow.formats.blocks`)."""

        def read(a: int, b: int) -> np.ndarray:
            return np.frombuffer(self.fetch(chrom, a, b, pad=pad), dtype=np.uint8)

        return read_windows(read, starts, width, np.uint8, max_gap, max_span)

    def one_hot_windows(self, chrom: str, starts: Sequence[int] | np.ndarray, width: int) -> np.ndarray:
        """One-hot windows (n, width, 4) uint8 of one chromosome, read in merged blocks."""
        return one_hot_windows(self.windows(chrom, starts, width))


def fasta_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Chromosome sizes of a FASTA file, in file order."""
    with FastaFile(path) as fa:
        return dict(fa.chrom_sizes)
