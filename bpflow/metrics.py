"""Evaluation metrics of predicted profiles and counts against observed data.

Pure numpy functions (vectorised over regions; a region's profile is a (length, tasks) array)
plus ``bpflow metrics CONFIG.json``, which scores one or more prediction files against the
dataset they were predicted from.  Definitions (docs/evaluation.md has the details):

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

import json
import logging
import math
from pathlib import Path

import numpy as np
from scipy.special import gammaln, rel_entr

from bpflow.utils import VERBOSITY_SCHEMA, BpflowError, atomic_output, read_step_config, setup_logging, validate_config

logger = logging.getLogger("bpflow.metrics")

PROFILE_METRICS = ("jsd", "normalized-jsd", "mnll", "pearson")


# ----------------------------------------------------------------------------------------------
# Pure functions


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
    return _counts_metrics_log(np.log1p(np.asarray(observed_totals, dtype=np.float64).ravel()),
                               predicted_logcounts)


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


# ----------------------------------------------------------------------------------------------
# Reading a dataset and its matching prediction files


def _dataset_heads(data, source: str) -> list[str]:
    heads = []
    while f"head_{len(heads)}" in data:
        heads.append(f"head_{len(heads)}")
    if not heads:
        raise BpflowError(f"{source}: no head_0 dataset (not a bpflow/BPReveal training dataset?)")
    return heads


def _dataset_head_names(data, num_heads: int) -> list[str] | None:
    """Head names from the dataset's metadata (``head_names`` or the config's heads), if any."""
    if "metadata" not in data:
        return None
    attrs = data["metadata"].attrs
    for key, pick in (("head_names", lambda v: v), ("config", lambda v: [h["head-name"] for h in v["heads"]])):
        if key not in attrs:
            continue
        try:
            names = [str(n) for n in pick(json.loads(attrs[key]))]
        except (ValueError, KeyError, TypeError):
            continue
        if len(names) == num_heads:
            return names
    return None


def check_same_samples(pf, data, data_path: str, out_len: int | None = None) -> None:
    """Raise unless the prediction file matches the dataset sample for sample."""
    from bpflow.predict import center_windows, read_coords

    out_len = pf.output_length if out_len is None else out_len
    n_data = data["head_0"].shape[0]
    if pf.num_samples != n_data:
        raise BpflowError(f"{pf.path} has {pf.num_samples} samples but the dataset {data_path} has {n_data}: "
                          "they must match sample for sample (predict with the dataset as key data)")
    pc, dc = pf.coords(), read_coords(data, data_path)
    if pc is None or dc is None:
        logger.warning("%s or %s has no coordinates: cannot check that the samples match", pf.path, data_path)
        return
    d_start, d_stop = center_windows(dc.start, dc.stop, out_len)
    same = (pc.names() == dc.names()) & (pc.start == d_start) & (pc.stop == d_stop)
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise BpflowError(
            f"{pf.path} sample {i} is {pc.label(i)} but {data_path} sample {i} is "
            f"{dc.names()[i]}:{d_start[i]}-{d_stop[i]} (its window centered to {out_len} bp); "
            f"{int((~same).sum())} sample(s) differ: the files do not match sample for sample")


def _select_samples(data, data_path: str, strands: str) -> tuple[np.ndarray, str]:
    """Boolean mask of the samples to score and the strand rule that was used."""
    from bpflow.predict import read_strands

    n = data["head_0"].shape[0]
    reverse = read_strands(data, data_path)
    if strands == "all":
        return np.ones(n, dtype=bool), "all"
    if reverse is None:
        if strands == "forward":
            raise BpflowError(f"{data_path}: key strands is \"forward\" but the dataset has no coords_strand")
        logger.warning("%s has no coords_strand: scoring all %d samples (if the file stores "
                       "reverse-complement pairs, both members are counted)", data_path, n)
        return np.ones(n, dtype=bool), "all"
    return ~reverse, "forward"


def evaluate(predictions: list[tuple[str, str]], data_path: str, strands: str = "auto", chunk_size: int = 1024,
             region_set: str | None = None, keep_regions: bool = False) -> tuple[dict, dict]:
    """Score labelled prediction files against a dataset.

    Returns (result dict as written to the JSON output, per-region values keyed by
    (label, head name) when ``keep_regions`` else {}).
    """
    import h5py

    from bpflow.predict import PredictionFile, read_coords

    if not Path(data_path).is_file():
        raise BpflowError(f"{data_path}: dataset not found")
    result = {"region-set": region_set, "data": str(data_path), "models": {}}
    regions = {}
    with h5py.File(data_path, "r") as data:
        heads = _dataset_heads(data, data_path)
        mask, used = _select_samples(data, data_path, strands)
        result.update({"strands": used, "num-samples": int(len(mask)), "num-evaluated": int(mask.sum())})
        if not mask.any():
            raise BpflowError(f"{data_path}: no sample to evaluate")
        data_names = _dataset_head_names(data, len(heads)) or heads
        coords = read_coords(data, data_path)
        for label, path in predictions:
            with PredictionFile(path) as pf:
                if pf.num_heads != len(heads):
                    raise BpflowError(f"{path} has {pf.num_heads} head(s) but {data_path} has {len(heads)}")
                out = pf.output_length
                check_same_samples(pf, data, data_path, out)
                model_result = {"predictions": str(path), "heads": {}}
                for h, key in enumerate(heads):
                    ds = data[key]
                    tasks = pf.num_tasks(h)
                    crop = ds.shape[1] - out
                    if crop < 0 or crop % 2 or ds.shape[2] != tasks:
                        raise BpflowError(f"{data_path} {key} has shape {ds.shape[1:]} but {path} head_{h} "
                                          f"predicts ({out}, {tasks}): cannot center-crop one onto the other")
                    j = crop // 2
                    name = pf.head_name(h) if pf.head_name(h) != f"head_{h}" else data_names[h]
                    parts: dict[str, list] = {}
                    for a in range(0, len(mask), chunk_size):
                        b = min(len(mask), a + chunk_size)
                        sel = mask[a:b]
                        if not sel.any():
                            continue
                        obs = ds[a:b, j:j + out, :][sel]
                        vals = region_metrics(np.nan_to_num(obs), pf.logits(h, slice(a, b))[sel],
                                              pf.logcounts(h, slice(a, b))[sel])
                        for k, v in vals.items():
                            parts.setdefault(k, []).append(v)
                    values = {k: np.concatenate(v) for k, v in parts.items()}
                    model_result["heads"][name] = {"head-index": h, **summarize_head(values)}
                    if keep_regions:
                        index = np.flatnonzero(mask)
                        if coords is not None:
                            s, e = (c[index] for c in _centered(coords, out))
                            values["chrom"], values["start"], values["stop"] = coords.names()[index], s, e
                        values["index"] = index
                        regions[(label, name)] = values
                    logger.info("%s %s: counts Pearson %.3f, median JSD %.3f (%d regions)", label, name,
                                model_result["heads"][name]["counts"]["pearson"],
                                model_result["heads"][name]["profile"]["jsd"]["median"], int(mask.sum()))
                result["models"][label] = model_result
    return result, regions


def _centered(coords, out: int):
    from bpflow.predict import center_windows

    return center_windows(coords.start, coords.stop, out)


# ----------------------------------------------------------------------------------------------
# Output


TSV_COLUMNS = (["region-set", "model", "head", "num-regions", "num-zero-observed",
                "counts-pearson", "counts-spearman", "counts-mse"]
               + [f"{m}-{s}" for m in PROFILE_METRICS for s in ("median", "q1", "q3", "mean")])

REGION_COLUMNS = ["region-set", "model", "head", "index", "chrom", "start", "stop", "observed-log1p-counts",
                  "predicted-logcounts", "jsd", "normalized-jsd", "mnll", "pearson"]


def _fmt(value) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return "NA" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def tsv_rows(result: dict) -> list[list[str]]:
    rows = []
    for label, model in result["models"].items():
        for head, r in model["heads"].items():
            row = [result.get("region-set") or "", label, head, r["num-regions"], r["num-zero-observed"],
                   r["counts"]["pearson"], r["counts"]["spearman"], r["counts"]["mse"]]
            row += [r["profile"][m][s] for m in PROFILE_METRICS for s in ("median", "q1", "q3", "mean")]
            rows.append([_fmt(v) for v in row])
    return rows


def _json_clean(obj):
    """NaN/inf -> null so the JSON output is standard JSON."""
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path, lines: list[str]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# bpflow metrics


METRICS_SCHEMA = {
    "type": "object",
    "properties": {
        "predictions": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}, "minProperties": 1},
            ]
        },
        "data": {"type": "string", "minLength": 1},
        "region-set": {"type": "string"},
        "strands": {"enum": ["auto", "forward", "all"]},
        "output-json": {"type": "string", "minLength": 1},
        "output-tsv": {"type": "string", "minLength": 1},
        "output-regions-tsv": {"type": "string", "minLength": 1},
        "chunk-size": {"type": "integer", "minimum": 1},
        "verbosity": VERBOSITY_SCHEMA,
    },
    "required": ["predictions", "data"],
    "additionalProperties": False,
}


def _labelled(predictions, source: str) -> list[tuple[str, str]]:
    if isinstance(predictions, str):
        predictions = [predictions]
    if isinstance(predictions, list):
        pairs = [(Path(p).name.removesuffix(".h5").removesuffix(".hdf5"), p) for p in predictions]
    else:
        pairs = list(predictions.items())
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise BpflowError(f"{source}: key predictions: labels repeat ({', '.join(labels)}); use an object "
                          "{label: file}")
    for label, path in pairs:
        if not Path(path).is_file():
            raise BpflowError(f"{source}: key predictions: {label}: file {path} not found")
    return pairs


def main(argv: list[str]) -> int:
    """``bpflow metrics CONFIG.json``."""
    path, config = read_step_config(argv, "bpflow metrics", "Score prediction files against the dataset they predict.",
                                    "docs/evaluation.md")
    validate_config(config, METRICS_SCHEMA, path)
    setup_logging(config.get("verbosity", "INFO"))
    outputs = [k for k in ("output-json", "output-tsv", "output-regions-tsv") if k in config]
    if not outputs:
        raise BpflowError(f"{path}: give at least one of the keys output-json, output-tsv, output-regions-tsv")
    if len({config[k] for k in outputs}) != len(outputs):
        raise BpflowError(f"{path}: the output files must differ")
    if not Path(config["data"]).is_file():
        raise BpflowError(f"{path}: key data: file {config['data']} not found")
    predictions = _labelled(config["predictions"], path)
    region_set = config.get("region-set")
    result, regions = evaluate(predictions, config["data"], config.get("strands", "auto"),
                               config.get("chunk-size", 1024), region_set, "output-regions-tsv" in config)
    if "output-json" in config:
        with atomic_output(config["output-json"]) as tmp:
            with open(tmp, "w") as fh:
                json.dump(_json_clean(result), fh, indent=2, allow_nan=False)
                fh.write("\n")
    if "output-tsv" in config:
        _write_text(config["output-tsv"], ["\t".join(TSV_COLUMNS)] + ["\t".join(r) for r in tsv_rows(result)])
    if "output-regions-tsv" in config:
        lines = ["\t".join(REGION_COLUMNS)]
        for (label, head), values in regions.items():
            n = len(values["index"])
            for i in range(n):
                row = [region_set or "", label, head, int(values["index"][i]),
                       values["chrom"][i] if "chrom" in values else "NA",
                       int(values["start"][i]) if "start" in values else "NA",
                       int(values["stop"][i]) if "stop" in values else "NA"]
                row += [float(values[k][i]) for k in REGION_COLUMNS[7:]]
                lines.append("\t".join(_fmt(v) for v in row))
        _write_text(config["output-regions-tsv"], lines)
    return 0
