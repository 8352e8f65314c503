"""Dinucleotide-shuffled reference sequences for DeepLIFT / DeepSHAP.

:func:`dinucleotide_shuffle` draws sequences uniformly at random among all sequences with
exactly the same dinucleotide counts as the input and the same first base (hence, the
counts fixing the rest, the same last base): the Altschul-Erickson shuffle, generated as
a random Eulerian trail of the input's dinucleotide multigraph (Kandel et al. 1996; the
same algorithm as MEME's ``fasta-shuffle-letters -kmer 2`` and uShuffle):

1. The multigraph has one vertex per symbol and one edge ``s[i] -> s[i + 1]`` per position.
2. A "last exit" edge is chosen for every vertex other than the last symbol, forming a
   uniformly random spanning arborescence directed to the last symbol (Wilson's
   loop-erased random walk, with parallel edges counted separately).
3. Every vertex's other out-edges are put in a uniformly random order, its last exit edge
   after them, and the trail from the first symbol takes each vertex's out-edges in order.

Each labelled Eulerian trail comes from exactly one (arborescence, orders) pair (the BEST
theorem), so trails are uniform, and so are the sequences they spell: every sequence is
spelled by the same number of labelled trails (the product of the factorials of its
dinucleotide counts).  DeepLIFT's ``dinuc_shuffle`` keeps the input's own last exit edges
instead of drawing them, which limits its shuffles to the sequences sharing those (on the
short examples of the tests, 1 or 2 of 4-10 valid ones); this module draws them too.

Positions with no base (N and other all-zero one-hot rows) are a fifth symbol, as in
DeepLIFT's ``dinuc_shuffle``: the counts of the 25 dinucleotides over A, C, G, T, N are kept
exactly, and the shuffles have as many N rows as the input, though not necessarily at the
same positions.  (Keeping N rows in place and shuffling each A/C/G/T stretch separately would
leave short stretches between N's nearly unshuffled and change the statistics at their
ends; a genome window rarely holds any N.)

Everything is deterministic given the random generator; :func:`references_for` seeds one
generator per sequence from (seed, the sequence's index), so a batch's references do not
depend on how the sequences are batched.
"""

from __future__ import annotations

import numpy as np

NUM_SYMBOLS = 5  # A, C, G, T and "no base" (an all-zero one-hot row)


def _tokens(one_hot: np.ndarray) -> np.ndarray:
    """Symbols 0..3 (A, C, G, T) and 4 (all-zero row) of an (L, 4) one-hot array."""
    one_hot = np.asarray(one_hot)
    if one_hot.ndim != 2 or one_hot.shape[1] != 4:
        raise ValueError(f"expected a one-hot sequence of shape (length, 4), got shape {one_hot.shape}")
    row_sums = one_hot.sum(axis=1)
    if not (np.isin(one_hot, (0, 1)).all() and (row_sums <= 1).all()):
        raise ValueError("expected a one-hot sequence: values 0 / 1, at most one 1 per position")
    return np.where(row_sums > 0, one_hot.argmax(axis=1), NUM_SYMBOLS - 1).astype(np.int64)


class _Plan:
    """The parts of one sequence's shuffles that do not change between draws."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens
        self.length = len(tokens)
        src = tokens[:-1]
        # Edge e goes from tokens[e] to tokens[e + 1].  Group the edges by source vertex.
        self.order = np.argsort(src, kind="stable")
        self.out_degree = np.bincount(src, minlength=NUM_SYMBOLS)
        self.offsets = np.concatenate([[0], np.cumsum(self.out_degree)])
        self.edges_of = [self.order[self.offsets[v] : self.offsets[v + 1]] for v in range(NUM_SYMBOLS)]
        self.root = int(tokens[-1])
        self.first = int(tokens[0])

    def last_exits(self, rng: np.random.Generator) -> list[int]:
        """A uniformly random arborescence to the last symbol: for each vertex v with
        out-edges (other than the root), the index within ``edges_of[v]`` of its last exit
        edge; -1 for the root and absent vertices (Wilson's algorithm)."""
        tokens = self.tokens
        in_tree = [False] * NUM_SYMBOLS
        in_tree[self.root] = True
        choice = [-1] * NUM_SYMBOLS
        nxt = [-1] * NUM_SYMBOLS
        degree = self.out_degree.tolist()
        pool = rng.random(32)
        used = 0
        for start in range(NUM_SYMBOLS):
            if in_tree[start] or degree[start] == 0:
                continue
            u = start
            while not in_tree[u]:  # random walk, remembering the last exit taken from each vertex
                if used == len(pool):
                    pool = rng.random(32)
                    used = 0
                k = int(pool[used] * degree[u])
                used += 1
                choice[u] = k
                nxt[u] = int(tokens[self.edges_of[u][k] + 1])
                u = nxt[u]
            u = start
            while not in_tree[u]:  # the loop-erased path joins the tree
                in_tree[u] = True
                u = nxt[u]
        return [choice[v] if v != self.root else -1 for v in range(NUM_SYMBOLS)]

    def successors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, L - 1) int8: for each draw, the symbols each vertex steps to, vertex by vertex
        (vertex v's block at ``offsets[v]:offsets[v + 1]``) in the order the trail uses them."""
        exits = np.array([self.last_exits(rng) for _ in range(n)], dtype=np.int64).reshape(n, NUM_SYMBOLS)
        out = np.empty((n, self.length - 1), dtype=np.int8)
        for v in range(NUM_SYMBOLS):
            a, b = self.offsets[v], self.offsets[v + 1]
            if b == a:
                continue
            heads = self.tokens[self.edges_of[v] + 1]
            if v == self.root:  # every out-edge of the last symbol in random order
                perm = rng.permuted(np.broadcast_to(np.arange(b - a), (n, b - a)), axis=1)
            else:  # the other out-edges in random order, then the last exit
                last = exits[:, v : v + 1]
                rest = np.broadcast_to(np.arange(b - a - 1), (n, b - a - 1))
                rest = rng.permuted(rest + (rest >= last), axis=1)
                perm = np.concatenate([rest, last], axis=1)
            out[:, a:b] = heads[perm]
        return out


def _walk(first: np.ndarray, succ: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Follow many trails at once: trail m starts at ``first[m]`` and, at its k-th departure
    from vertex v, steps to ``succ[m, offsets[m, v] + k]``.  Returns (M, L) symbols."""
    num, steps = succ.shape
    out = np.empty((num, steps + 1), dtype=np.int8)
    x = first.astype(np.int64)
    out[:, 0] = x
    flat_succ = succ.reshape(-1).astype(np.int64)
    pointer = (offsets[:, :NUM_SYMBOLS] + (np.arange(num) * steps)[:, None]).reshape(-1).astype(np.int64)
    base = np.arange(num, dtype=np.int64) * NUM_SYMBOLS
    for j in range(1, steps + 1):
        slot = base + x
        x = flat_succ[pointer[slot]]
        pointer[slot] += 1  # each trail updates its own slots only: no repeated indices
        out[:, j] = x
    return out


def _one_hot(tokens: np.ndarray, dtype) -> np.ndarray:
    """One-hot rows of symbols 0..4 (4: all zero)."""
    return (np.asarray(tokens)[..., None] == np.arange(4, dtype=np.int8)).astype(dtype)


def _shuffle_many(sequences: list[np.ndarray], n: int, rngs: list[np.random.Generator], dtype) -> np.ndarray:
    """(len(sequences), n, L, 4) shuffles of equal-length sequences, one generator each."""
    length = len(sequences[0]) if sequences else 0
    if length <= 2 or n == 0:  # one arrangement only
        tokens = np.stack([_tokens(s) for s in sequences]) if sequences else np.zeros((0, length), np.int64)
        return np.broadcast_to(_one_hot(tokens, dtype)[:, None], (len(sequences), n, length, 4)).copy()
    succ, offsets, first = [], [], []
    for seq, rng in zip(sequences, rngs):
        plan = _Plan(_tokens(seq))
        succ.append(plan.successors(n, rng))
        offsets.append(np.broadcast_to(plan.offsets, (n, NUM_SYMBOLS + 1)))
        first.append(np.full(n, plan.first))
    tokens = _walk(np.concatenate(first), np.concatenate(succ), np.concatenate(offsets))
    return _one_hot(tokens, dtype).reshape(len(sequences), n, length, 4)


def dinucleotide_shuffle(one_hot: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` dinucleotide shuffles of an (L, 4) one-hot sequence: an (n, L, 4) array of the
    input's dtype, drawn uniformly among the sequences with the same first base and the same
    counts of each dinucleotide (all-zero rows counting as a fifth symbol, N)."""
    one_hot = np.asarray(one_hot)
    _tokens(one_hot)  # check the shape and values
    if n < 0:
        raise ValueError(f"the number of shuffles must be >= 0, got {n}")
    return _shuffle_many([one_hot], int(n), [rng], one_hot.dtype)[0]


def sequence_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of the sequence with global index ``index`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def references_for(batch: np.ndarray, n: int, seed: int, start: int = 0) -> np.ndarray:
    """(N, n, L, 4) dinucleotide-shuffled references of a batch of (N, L, 4) one-hot
    sequences: sequence ``i`` of the batch is sequence ``start + i`` of the whole run and
    its references depend only on (``seed``, ``start + i``) and the sequence itself, so
    they are the same however the run is split into batches."""
    batch = np.asarray(batch)
    if batch.ndim != 3 or batch.shape[2] != 4:
        raise ValueError(f"expected one-hot sequences of shape (N, length, 4), got shape {batch.shape}")
    if n < 0:
        raise ValueError(f"the number of references must be >= 0, got {n}")
    rngs = [sequence_rng(seed, start + i) for i in range(len(batch))]
    return _shuffle_many(list(batch), int(n), rngs, batch.dtype)
