"""Evaluation metrics of predicted profiles and counts against observed data.

Pure numpy functions (vectorised over regions; a region's profile is a (length, tasks) array)
used by ``bpflow metrics`` (:mod:`bpflow.evaluate.metrics`), footprints, quality checks and the
report.  Definitions (docs/evaluation.md has the details):

- counts: Pearson, Spearman and mean squared error between log(1 + observed total) and the
  predicted log counts, over regions; a region's total is summed over positions and tasks.
- profile, per region, with the observed and predicted profiles each normalised over all
  positions x tasks jointly (as the model's softmax is):
  Jensen-Shannon distance = sqrt(JS divergence), natural log (scipy's ``jensenshannon``);
  normalized JSD = 1 - JSD(obs, pred) / JSD(obs, uniform), clipped to [0, 1] (1 is perfect,
  0 no better than a flat profile); multinomial negative log-likelihood of the observed
  counts under the predicted probabilities, INCLUDING the log(n! / prod y!) constant (so it
  equals ``-scipy.stats.multinomial.logpmf`` for integer counts); Pearson correlation of the
  observed and predicted profile over positions x tasks.
- Regions whose observed profile is all zero have no profile to compare: every profile
  metric is NaN there, and summaries leave them out and report how many there were.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, rel_entr

PROFILE_METRICS = ("jsd", "normalized-jsd", "mnll", "pearson")


def _flat(x) -> np.ndarray:
    """(N, ...) -> (N, prod(...)) float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"expected (regions, positions[, tasks]) arrays, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def log_softmax_joint(logits) -> np.ndarray:
    """Log of the softmax over all positions and tasks of each region jointly; (N, ...) -> same."""
    x = np.asarray(logits, dtype=np.float64)
    flat = x.reshape(x.shape[0], -1)
    mx = flat.max(axis=1, keepdims=True)
    out = flat - mx - np.log(np.exp(flat - mx).sum(axis=1, keepdims=True))
    return out.reshape(x.shape)


def softmax_joint(logits) -> np.ndarray:
    """Softmax over all positions and tasks of each region jointly."""
    return np.exp(log_softmax_joint(logits))


def total_counts(profiles) -> np.ndarray:
    """Total of each region over positions and tasks, (N,) float64."""
    return _flat(profiles).sum(axis=1)


def pearson(x, y) -> float:
    """Pearson correlation of two 1-D arrays; NaN with fewer than 2 values or a constant one."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if len(x) < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(np.clip(xc @ yc / den, -1.0, 1.0)) if den > 0 else math.nan


def spearman(x, y) -> float:
    """Spearman rank correlation (ties get average ranks), NaN like :func:`pearson`."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) < 2:
        return math.nan
    return pearson(rankdata(x), rankdata(y))


def counts_metrics(observed_totals, predicted_logcounts) -> dict:
    """Pearson, Spearman and MSE of log(1 + observed total) vs predicted log counts.

    The predicted log counts are compared as they are: bpflow's counts heads are trained to
    predict log(1 + total).
    """
    return _counts_metrics_log(np.log1p(np.asarray(observed_totals, dtype=np.float64).ravel()), predicted_logcounts)


def _counts_metrics_log(obs, predicted_logcounts) -> dict:
    pred = np.asarray(predicted_logcounts, dtype=np.float64).ravel()
    if obs.shape != pred.shape:
        raise ValueError(f"shapes differ: {obs.shape} vs {pred.shape}")
    return {
        "pearson": pearson(obs, pred),
        "spearman": spearman(obs, pred),
        "mse": float(np.mean((obs - pred) ** 2)) if len(obs) else math.nan,
        "n": int(len(obs)),
    }


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their sums; rows summing to zero (or less) become NaN."""
    s = x.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, x / np.where(s > 0, s, 1.0), np.nan)


def jensen_shannon_distance(p, q) -> np.ndarray:
    """Per-region Jensen-Shannon distance (natural log) of two non-negative (N, ...) arrays.

    Each region is normalised over all its non-region axes jointly.  Equals
    ``scipy.spatial.distance.jensenshannon`` on the flattened region; NaN where either
    region sums to zero.
    """
    p, q = _normalise(_flat(p)), _normalise(_flat(q))
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    m = (p + q) / 2
    js = (rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)) / 2
    return np.sqrt(np.maximum(js, 0.0))


def normalized_jsd(observed, predicted) -> np.ndarray:
    """1 - JSD(obs, pred) / JSD(obs, uniform), clipped to [0, 1].

    NaN where the observed region is all zero or exactly uniform (no scale to normalise by).
    """
    obs = _flat(observed)
    jsd = jensen_shannon_distance(obs, predicted)
    ref = jensen_shannon_distance(obs, np.ones_like(obs))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - jsd / np.where(ref > 0, ref, np.nan)
    return np.clip(out, 0.0, 1.0)


def multinomial_nll(observed, logits, include_constant: bool = True) -> np.ndarray:
    """Per-region multinomial negative log-likelihood of observed counts under softmax(logits).

    The softmax is joint over positions and tasks.  With ``include_constant`` (default) the
    result is -[log n! - sum log y! + sum y log p] (via the gamma function, so non-integer
    coverage is allowed), which equals ``-scipy.stats.multinomial.logpmf`` for integer counts;
    without it, -sum y log p.
    """
    y = _flat(observed)
    logp = _flat(log_softmax_joint(logits))
    if y.shape != logp.shape:
        raise ValueError(f"shapes differ: {y.shape} vs {logp.shape}")
    ll = np.where(y > 0, y * logp, 0.0).sum(axis=1)  # 0 * log p counts as 0
    if include_constant:
        ll = ll + gammaln(y.sum(axis=1) + 1) - gammaln(y + 1).sum(axis=1)
    return -ll


def profile_pearson(observed, predicted) -> np.ndarray:
    """Per-region Pearson correlation over positions x tasks; NaN for a constant region."""
    x, y = _flat(observed), _flat(predicted)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.where(den > 0, den, np.nan)
    return np.clip(r, -1.0, 1.0)


def region_metrics(observed, logits, logcounts) -> dict[str, np.ndarray]:
    """All per-region values for one head: observed (N, L, T) coverage, logits (N, L, T), logcounts (N,).

    Keys: ``observed-log1p-counts``, ``predicted-logcounts``, ``jsd``, ``normalized-jsd``,
    ``mnll``, ``pearson``.  Profile metrics are NaN where the observed region is all zero.
    """
    obs = np.asarray(observed, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    if obs.shape != logits.shape:
        raise ValueError(f"observed {obs.shape} and logits {logits.shape} differ")
    probs = softmax_joint(logits)
    totals = total_counts(obs)
    zero = ~(totals > 0)
    out = {
        "observed-log1p-counts": np.log1p(totals),
        "predicted-logcounts": np.asarray(logcounts, dtype=np.float64).reshape(-1),
        "jsd": jensen_shannon_distance(obs, probs),
        "normalized-jsd": normalized_jsd(obs, probs),
        "mnll": multinomial_nll(obs, logits),
        "pearson": profile_pearson(obs, probs),
    }
    for key in PROFILE_METRICS:
        out[key] = np.where(zero, np.nan, out[key])
    return out


def summarize(values) -> dict:
    """Median, quartiles and mean of the finite values; ``n`` used, ``n-undefined`` left out."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    if not len(finite):
        stats = dict.fromkeys(("median", "q1", "q3", "mean"), math.nan)
    else:
        q1, med, q3 = np.percentile(finite, [25, 50, 75])
        stats = {"median": float(med), "q1": float(q1), "q3": float(q3), "mean": float(finite.mean())}
    return {**stats, "n": int(len(finite)), "n-undefined": int(len(v) - len(finite))}


def summarize_head(values: dict[str, np.ndarray]) -> dict:
    """Counts metrics and profile summaries from :func:`region_metrics` output (concatenated)."""
    obs_log = values["observed-log1p-counts"]
    counts = _counts_metrics_log(obs_log, values["predicted-logcounts"])
    zero = int(np.sum(obs_log <= 0))
    return {
        "num-regions": int(len(obs_log)),
        "num-zero-observed": zero,
        "counts": {k: counts[k] for k in ("pearson", "spearman", "mse")},
        "profile": {key: summarize(values[key]) for key in PROFILE_METRICS},
    }


def predicted_profile(logits: np.ndarray, logcounts: np.ndarray) -> np.ndarray:
    """Expected counts per position and task: joint softmax of the logits x exp(logcounts)."""
    logcounts = np.asarray(logcounts, dtype=np.float64).reshape(-1)
    return softmax_joint(logits) * np.exp(logcounts)[:, None, None]
