"""A closed-form k-mer baseline of the enzyme bias, to check a neural bias model without truth.

:class:`KmerBias` is a table of cut rates: for every task (strand) and every k-mer of the
sequence around an output position (bases ``left`` before to ``right`` after it), the mean
count observed at positions with that k-mer in the training background, shrunk towards the
task's mean rate by ``pseudocount`` positions.  It is the maximum-likelihood estimate of a
model whose expected count at a position depends on its k-mer context only (a position-
specific k-mer model of cut rates), computed by counting.

:func:`profile_losses` scores profiles on held-out windows: the mean multinomial negative
log-likelihood per window (without the coefficient) of the observed counts under a flat
profile, the k-mer table's profile and a model's profile.  A bias model that removes less of
the flat profile's loss than the k-mer table has not learned the bias that the data show.
"""

from __future__ import annotations

import numpy as np

from bpflow.lengths import crop_offset
from bpflow.utils import BpflowError


def base_codes(one_hot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..3, valid mask) of one-hot sequences (N, L, 4); non-ACGT positions are invalid."""
    one_hot = np.asarray(one_hot)
    return one_hot.argmax(axis=-1).astype(np.int64), one_hot.any(axis=-1)


class KmerBias:
    """Cut rates by k-mer context: rate[task, k-mer of bases (position - left .. position + right)]."""

    def __init__(self, left: int = 3, right: int = 3, pseudocount: float = 10.0):
        if left < 0 or right < 0 or left + right + 1 > 10:
            raise BpflowError(f"k-mer context {left} left / {right} right: give 0..9 bases in all (at most a 10-mer)")
        self.left, self.right, self.pseudocount = int(left), int(right), float(pseudocount)
        self.k = self.left + self.right + 1
        self.log_rates: np.ndarray | None = None  # (tasks, 4**k)
        self.num_windows = 0

    def _kmers(self, sequences: np.ndarray, output_length: int) -> tuple[np.ndarray, np.ndarray]:
        """k-mer index (N, output_length) of each output position and whether it is valid."""
        sequences = np.asarray(sequences)
        flank = crop_offset(sequences.shape[1], output_length, "the k-mer baseline's sequences")
        if flank < max(self.left, self.right):
            raise BpflowError(
                f"the k-mer baseline needs {max(self.left, self.right)} bases of sequence beyond each end of the "
                f"output window; the sequences give {flank}"
            )
        codes, valid = base_codes(sequences)
        index = np.zeros((len(codes), output_length), dtype=np.int64)
        ok = np.ones((len(codes), output_length), dtype=bool)
        for d in range(-self.left, self.right + 1):
            a = flank + d
            index = index * 4 + codes[:, a : a + output_length]
            ok &= valid[:, a : a + output_length]
        return index, ok

    def fit(self, sequences: np.ndarray, profiles: np.ndarray) -> "KmerBias":
        """Count the cut rates of every k-mer in windows ``sequences`` (N, L_in, 4) with observed
        ``profiles`` (N, L_out, tasks) centred in them."""
        profiles = np.asarray(profiles, dtype=np.float64)
        index, ok = self._kmers(sequences, profiles.shape[1])
        size = 4**self.k
        positions = np.bincount(index[ok], minlength=size).astype(np.float64)
        tables = []
        for t in range(profiles.shape[2]):
            reads = np.bincount(index[ok], weights=profiles[:, :, t][ok], minlength=size)
            mean = reads.sum() / max(positions.sum(), 1.0)
            rate = (reads + self.pseudocount * mean) / (positions + self.pseudocount)
            tables.append(np.log(np.maximum(rate, 1e-12)))
        self.log_rates = np.stack(tables)
        self.num_windows = int(len(profiles))
        return self

    def log_rates_of(self, sequences: np.ndarray, output_length: int) -> np.ndarray:
        """Log cut rates (N, output_length, tasks) of windows; invalid k-mers get the task's mean."""
        if self.log_rates is None:
            raise BpflowError("the k-mer baseline is not fitted")
        index, ok = self._kmers(sequences, output_length)
        out = self.log_rates[:, index].transpose(1, 2, 0)  # (N, L, tasks)
        mean = np.log(np.exp(self.log_rates).mean(axis=1))
        return np.where(ok[:, :, None], out, mean[None, None, :])


def multinomial_nll(observed: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-window -sum y log softmax(logits), the softmax joint over positions and tasks."""
    y = np.asarray(observed, dtype=np.float64).reshape(len(observed), -1)
    x = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    mx = x.max(axis=1, keepdims=True)
    log_p = x - mx - np.log(np.exp(x - mx).sum(axis=1, keepdims=True))
    return -(y * log_p).sum(axis=1)


def profile_losses(observed: np.ndarray, logits: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean multinomial NLL per window under a flat profile and under each named logits array."""
    observed = np.asarray(observed, dtype=np.float64)
    out = {"flat": float(np.mean(multinomial_nll(observed, np.zeros_like(observed))))}
    for name, value in logits.items():
        out[name] = float(np.mean(multinomial_nll(observed, value)))
    return out
