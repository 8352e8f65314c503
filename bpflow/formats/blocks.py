"""Merged-block reading: many windows of one chromosome read with few requests.

Windows that lie close together are read with one request covering all of them, and the
windows are sliced out of the block.  That is much faster than one small request per window
when windows are dense (training regions, tiled chromosomes), and never reads more than
``max_gap`` extra bases between two windows.  Used by :mod:`bpflow.formats.fasta` and
:mod:`bpflow.formats.bigwig`.  Coordinates are 0-based, half-open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Two windows closer than this are read with one request (the bases between them are read
# and thrown away).  Measured: a pyBigWig request costs ~60 us, a base in a block ~2-3 ns;
# pyfaidx is similar, so the break-even gap is ~20 kb.
DEFAULT_MAX_GAP = 16_384
# No block is longer than this (bounds memory: 4 bytes per base per bigWig block), unless a
# single window is longer.
DEFAULT_MAX_SPAN = 4_194_304


@dataclass(frozen=True)
class Block:
    """A span of one chromosome read at once, and the windows (by index) inside it."""

    start: int
    end: int
    index: np.ndarray  # indices into the caller's window arrays, sorted by window start


def plan_blocks(
    starts: Sequence[int] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
    max_gap: int = DEFAULT_MAX_GAP,
    max_span: int = DEFAULT_MAX_SPAN,
) -> list[Block]:
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
        out[k] = block[o : o + width]
    return out


def read_windows(read, starts, width: int, dtype, max_gap: int = DEFAULT_MAX_GAP, max_span: int = DEFAULT_MAX_SPAN):
    """Windows ``[s, s + width)`` as an (n, width) array of ``dtype``, where ``read(start, end)``
    returns the 1-D values of one block."""
    starts = np.asarray(starts, dtype=np.int64)
    out = np.empty((len(starts), width), dtype=dtype)
    for block in plan_blocks(starts, starts + width, max_gap, max_span):
        out[block.index] = gather_windows(read(block.start, block.end), starts[block.index] - block.start, width)
    return out
