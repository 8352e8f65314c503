"""DNA one-hot encoding (columns A, C, G, T) and reverse complement.

Any base other than A/C/G/T (either case) - N, IUPAC codes, gaps - encodes as an all-zero row.
"""

from __future__ import annotations

import numpy as np

from bpflow.utils import BpflowError

BASES = "ACGT"

_ONE_HOT_TABLE = np.zeros((256, 4), dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _ONE_HOT_TABLE[ord(_b), _i] = 1
    _ONE_HOT_TABLE[ord(_b.lower()), _i] = 1


def one_hot_encode(seq: str | bytes) -> np.ndarray:
    """(len(seq), 4) uint8 one-hot array of a DNA sequence."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    return _ONE_HOT_TABLE[np.frombuffer(seq, dtype=np.uint8)]


def one_hot_decode(onehot: np.ndarray) -> str:
    """Inverse of :func:`one_hot_encode`; all-zero rows decode as N."""
    onehot = np.asarray(onehot)
    letters = np.array(list(BASES + "N"))
    index = np.where(onehot.any(axis=-1), onehot.argmax(axis=-1), 4)
    return "".join(letters[index])


def reverse_complement_one_hot(onehot: np.ndarray) -> np.ndarray:
    """Reverse complement of one-hot sequences (..., length, 4): flip length and ACGT->TGCA."""
    return np.asarray(onehot)[..., ::-1, ::-1]


def non_acgt_fraction(onehot: np.ndarray) -> float:
    """Fraction of positions that are not A, C, G or T."""
    onehot = np.asarray(onehot)
    return float(1.0 - onehot.any(axis=-1).mean()) if onehot.shape[-2] else 0.0


def gc_fraction(onehot: np.ndarray) -> np.ndarray:
    """GC fraction of one-hot sequences over their last two axes (ACGT positions only)."""
    onehot = np.asarray(onehot)
    acgt = onehot.sum(axis=(-2, -1)).astype(np.float64)
    gc = onehot[..., 1:3].sum(axis=(-2, -1)).astype(np.float64)
    return np.divide(gc, acgt, out=np.zeros_like(gc), where=acgt > 0)


def revcomp_task_order(order, num_tasks: int, where: str) -> list[int]:
    """Resolve a ``revcomp-task-order``: ``"auto"`` (or None) is [0] for one task and [1, 0]
    for two; a list must be a permutation of 0..num_tasks-1.  Task i of a forward sample
    becomes task ``order[i]`` of its reverse complement."""
    if order is None or order == "auto":
        if num_tasks == 1:
            return [0]
        if num_tasks == 2:
            return [1, 0]
        raise BpflowError(f"{where}: revcomp-task-order \"auto\" needs 1 or 2 tasks, the head has "
                          f"{num_tasks}; give the order as a list")
    order = [int(x) for x in order]
    if sorted(order) != list(range(num_tasks)):
        raise BpflowError(f"{where}: revcomp-task-order {order} is not a permutation of the head's "
                          f"task indices 0..{num_tasks - 1}")
    return order
