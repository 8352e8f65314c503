"""DNA sequence: one-hot encoding (columns A, C, G, T), integer base codes, reverse complement.

Any base other than A/C/G/T (either case) - N, IUPAC codes, gaps - encodes as an all-zero
one-hot row, and as code 4 (:data:`N_CODE`) in the integer encoding (A, C, G, T = 0..3).
(A genome read through :class:`bpflow.formats.fasta.FastaFile` holds only A/C/G/T and IUPAC
letters: other characters there are an error.)
"""

from __future__ import annotations

import numpy as np

from bpflow.utils import BpflowError

BASES = "ACGT"
N_CODE = 4  # integer code of N (A, C, G, T are 0..3; the complement of code c < 4 is 3 - c)

_ONE_HOT_TABLE = np.zeros((256, 4), dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _ONE_HOT_TABLE[ord(_b), _i] = 1
    _ONE_HOT_TABLE[ord(_b.lower()), _i] = 1


# ----------------------------------------------------------------------------------------------
# One-hot


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


# The one-hot table, one 4-byte row per ASCII code, as uint32 so that encoding is a single
# gather of 4-byte items (several times faster than a (256, 4) fancy index).
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


# ----------------------------------------------------------------------------------------------
# Integer base codes (A=0, C=1, G=2, T=3, anything else N_CODE)

_CODE_TABLE = np.full(256, N_CODE, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE_TABLE[ord(_b)] = _i
    _CODE_TABLE[ord(_b.lower())] = _i
CODE_LETTERS = np.frombuffer(b"ACGTN", dtype=np.uint8)  # ASCII letter of each code


def encode(seq: str | bytes) -> np.ndarray:
    """Sequence -> uint8 codes (A=0, C=1, G=2, T=3, anything else 4)."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    return _CODE_TABLE[np.frombuffer(seq, dtype=np.uint8)]


def decode(codes: np.ndarray) -> str:
    """Inverse of :func:`encode` (code 4 decodes as N)."""
    return CODE_LETTERS[np.asarray(codes, dtype=np.uint8)].tobytes().decode("ascii")


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of a sequence of codes (N stays N)."""
    codes = np.asarray(codes, dtype=np.uint8)
    return np.where(codes < N_CODE, 3 - codes, N_CODE).astype(np.uint8)[::-1]


def reverse_complement(seq: str) -> str:
    """Reverse complement of a sequence string (anything but A/C/G/T becomes N)."""
    return decode(reverse_complement_codes(encode(seq)))


# ----------------------------------------------------------------------------------------------
# Reverse-complement task orders


def revcomp_task_order(order, num_tasks: int, where: str) -> list[int]:
    """Resolve a ``revcomp-task-order``: ``"auto"`` (or None) is [0] for one task and [1, 0]
    for two; a list must be a permutation of 0..num_tasks-1.  Task i of a forward sample
    becomes task ``order[i]`` of its reverse complement."""
    if order is None or order == "auto":
        if num_tasks == 1:
            return [0]
        if num_tasks == 2:
            return [1, 0]
        raise BpflowError(
            f'{where}: revcomp-task-order "auto" needs 1 or 2 tasks, the head has {num_tasks}; give the order as a list'
        )
    order = [int(x) for x in order]
    if sorted(order) != list(range(num_tasks)):
        raise BpflowError(
            f"{where}: revcomp-task-order {order} is not a permutation of the head's task indices 0..{num_tasks - 1}"
        )
    return order
