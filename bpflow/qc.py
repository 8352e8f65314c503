"""Bias-factorization quality checks and the closed-form counts fit of the transformation.

* :func:`fit_counts_offset` / :func:`fit_counts_linear`: the transformation's counts part
  fitted in closed form to ``log(1 + observed total)`` on regions where the bias explains
  everything (the experiment's background regions): an intercept shift (ChromBPNet's
  recipe) or a least-squares line.
* :func:`counts_qc`: on validation peaks, the combined model's counts against the bias
  branch's and the residual's; flags a collapsed residual counts head.
* :func:`motif_qc`: marginal footprints (:mod:`bpflow.footprints`) of the bias branch and the
  residual for TF motifs and bias motifs; flags a bias model that learned TF motifs and a
  residual that learned the bias.

Thresholds and the JSON layout: docs/training.md ("Quality checks").
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.qc")

QC_FORMAT = "bpflow-qc/1"
# Defaults of the train-combined `qc` keys.
MIN_RESIDUAL_SHARE = 0.1       # residual share of the predicted counts on validation peaks
RESIDUAL_PEARSON_MARGIN = 0.05  # combined counts Pearson this far below the residual's alone: warn
MAX_BIAS_TF_RATIO = 0.2        # bias branch's TF-motif response / residual's TF-motif response
MAX_RESIDUAL_BIAS_RATIO = 0.1  # residual's bias-motif response / its TF-motif response
QC_NUM_SEQUENCES = 64


# --------------------------------------------------------------------------- data


def read_windows(files, input_length: int, output_length: int, num_heads: int,
                 max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centered windows of dataset HDF5 file(s) in BPReveal's layout.

    Returns ``(sequences (N, input_length, 4) uint8, totals (N, num_heads) float64)``: each
    sample's sequence center-cropped to ``input_length`` and each head's total counts over the
    central ``output_length`` positions (every task).  With ``max_samples``, an evenly spaced
    subset of at most that many samples.
    """
    import h5py

    files = [files] if isinstance(files, (str, Path)) else list(files)
    seqs, totals = [], []
    for path in files:
        if not Path(path).is_file():
            raise BpflowError(f"{path}: dataset not found")
        with h5py.File(path, "r") as f:
            if "sequence" not in f:
                raise BpflowError(f"{path}: no 'sequence' dataset")
            seq = f["sequence"]
            extra = seq.shape[1] - input_length
            if extra < 0 or extra % 2:
                raise BpflowError(f"{path}: sequences are {seq.shape[1]} bp; cannot center-crop to {input_length}")
            a = extra // 2
            seqs.append(np.asarray(seq[:, a:a + input_length, :], dtype=np.uint8))
            per_head = []
            for i in range(num_heads):
                if f"head_{i}" not in f:
                    raise BpflowError(f"{path}: no dataset head_{i}")
                prof = f[f"head_{i}"]
                extra = prof.shape[1] - output_length
                if extra < 0 or extra % 2:
                    raise BpflowError(f"{path}: head_{i} is {prof.shape[1]} wide; cannot center-crop to "
                                      f"{output_length}")
                b = extra // 2
                values = np.nan_to_num(np.asarray(prof[:, b:b + output_length, :], dtype=np.float64))
                per_head.append(values.sum(axis=(1, 2)))
            totals.append(np.stack(per_head, axis=1) if per_head else np.zeros((len(seqs[-1]), 0)))
    seq = np.concatenate(seqs) if seqs else np.zeros((0, input_length, 4), np.uint8)
    tot = np.concatenate(totals) if totals else np.zeros((0, num_heads))
    if max_samples is not None and len(seq) > max_samples:
        index = np.unique(np.linspace(0, len(seq) - 1, int(max_samples)).round().astype(int))
        seq, tot = seq[index], tot[index]
    return seq, tot


def predict_logcounts(model, sequences: np.ndarray, batch_size: int = 256) -> tuple[list, list]:
    """(logits per head, log counts per head (N,)) of a model over in-memory sequences."""
    from bpflow.predict import predict_arrays

    return predict_arrays(model, sequences, batch_size=batch_size)


# --------------------------------------------------------------------------- closed-form counts fit


def fit_counts_offset(predicted, observed_log) -> tuple[float, float]:
    """ChromBPNet's shift: slope 1, offset = mean(observed_log - predicted)."""
    x = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(observed_log, dtype=np.float64).ravel()
    if x.size == 0 or x.size != y.size:
        raise BpflowError(f"counts fit: need matching non-empty arrays, got {x.size} and {y.size} values")
    return 1.0, float(np.mean(y - x))


def fit_counts_linear(predicted, observed_log) -> tuple[float, float]:
    """Least squares ``observed_log ~ slope * predicted + offset``; a shift when the
    predictions do not vary."""
    x = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(observed_log, dtype=np.float64).ravel()
    if x.size == 0 or x.size != y.size:
        raise BpflowError(f"counts fit: need matching non-empty arrays, got {x.size} and {y.size} values")
    var = float(np.var(x))
    if x.size < 2 or var <= 1e-12 * max(1.0, float(np.mean(x * x))):
        return fit_counts_offset(x, y)
    slope = float(np.mean((x - x.mean()) * (y - y.mean())) / var)
    return slope, float(y.mean() - slope * x.mean())


COUNTS_FITS = {"shift": fit_counts_offset, "linear": fit_counts_linear}


def set_linear_transform(layer, slope: float, offset: float) -> None:
    """Make a :class:`bpflow.layers.SimpleTransform` compute ``slope * x + offset``: its
    linear term gets the values, every other term scale 0 and bias 0."""
    if "linear" not in getattr(layer, "types", ()):
        raise BpflowError(f"{layer.name}: a closed-form counts fit needs a simple transformation with a "
                          "linear term")
    done = False
    for term in layer._terms:
        if term[0] == "linear" and not done:
            term[1].assign(np.float32(slope))
            term[2].assign(np.float32(offset))
            done = True
        elif term[0] == "linear":
            term[1].assign(np.float32(0.0))
            term[2].assign(np.float32(0.0))
        else:
            term[1].assign(np.float32(0.0))  # scale
            term[4].assign(np.float32(0.0))  # bias


def _mse(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean((a - b) ** 2)) if a.size else math.nan


def fit_counts_transform(model, solo, head_names: Sequence[str], train_files, val_files, method: str,
                         input_length: int, output_length: int) -> dict:
    """Fit each head's counts transformation of ``model`` (a transformation model around the
    frozen ``solo``) on the windows of ``train_files``; report MSEs on ``val_files``."""
    fit = COUNTS_FITS[method]
    n = len(head_names)
    seq_t, tot_t = read_windows(train_files, input_length, output_length, n)
    seq_v, tot_v = read_windows(val_files, input_length, output_length, n)
    if not len(seq_t):
        raise BpflowError("counts-train-data: no samples")
    _, pred_t = predict_logcounts(solo, seq_t)
    _, pred_v = predict_logcounts(solo, seq_v) if len(seq_v) else ([], [np.zeros(0)] * n)
    out = {"method": method, "train-samples": int(len(seq_t)), "val-samples": int(len(seq_v)), "heads": {}}
    for i, name in enumerate(head_names):
        y_t, y_v = np.log1p(tot_t[:, i]), np.log1p(tot_v[:, i])
        slope, offset = fit(pred_t[i], y_t)
        set_linear_transform(model.get_layer(f"transformation_logcounts_{name}"), slope, offset)
        out["heads"][name] = {
            "slope": slope, "offset": offset,
            "train-mse-before": _mse(pred_t[i], y_t),
            "train-mse-after": _mse(slope * pred_t[i] + offset, y_t),
            "val-mse-before": _mse(pred_v[i], y_v),
            "val-mse-after": _mse(slope * pred_v[i] + offset, y_v),
            "mean-observed-log": float(np.mean(y_t)),
        }
        h = out["heads"][name]
        logger.info("counts transformation %s (%s on %d windows): slope %.4g offset %+.4g; val MSE %.4g -> %.4g",
                    name, method, len(seq_t), slope, offset, h["val-mse-before"], h["val-mse-after"])
    return out


# --------------------------------------------------------------------------- QC of the combined model


def _pearson(x, y) -> float:
    from bpflow.metrics import pearson

    return float(pearson(np.asarray(x, np.float64), np.asarray(y, np.float64)))


def _check(head: dict, check: str, value: str, threshold: str, failed: bool, warning: str) -> None:
    """Record one check of a head (``checks``: what the report's table shows) and, when it
    failed, its warning."""
    head["checks"].append({"check": check, "value": value, "threshold": threshold,
                           "status": "WARNING" if failed else "ok"})
    if failed:
        head["warnings"].append(warning)


def counts_qc(combined, residual, bias, files, head_names: Sequence[str], use_bias_counts: Sequence[bool],
              min_residual_share: float = MIN_RESIDUAL_SHARE, max_samples: int | None = 4096) -> dict:
    """Counts of the combined model, its bias branch and its residual on ``files``
    (validation peaks) against the observed log(1 + total).

    Per head: Pearson of each model, ``residual-share`` = median over windows of
    exp(residual) / (exp(residual) + exp(bias)) (the residual's part of the predicted counts),
    and ``warnings``: the residual's share below ``min_residual_share`` (collapsed residual
    counts head), the combined counts Pearson more than ``RESIDUAL_PEARSON_MARGIN`` below the
    residual's alone (the bias counts hurt), or not above the bias branch's.
    """
    from bpflow.predict import model_shape

    shape = model_shape(combined)
    n = len(head_names)
    seqs, totals = read_windows(files, shape.input_length, shape.output_length, n, max_samples=max_samples)
    out = {"num-windows": int(len(seqs)), "min-residual-share": float(min_residual_share), "heads": {}}
    if not len(seqs):
        return out
    _, comb = predict_logcounts(combined, seqs)
    _, res = predict_logcounts(residual, seqs)
    _, bia = predict_logcounts(bias, seqs)
    for i, name in enumerate(head_names):
        y = np.log1p(totals[:, i])
        r, b = res[i].astype(np.float64), bia[i].astype(np.float64)
        share = 1.0 / (1.0 + np.exp(np.clip(b - r, -50, 50)))
        h = {
            "pearson-combined": _pearson(comb[i], y),
            "pearson-bias": _pearson(b, y),
            "pearson-residual": _pearson(r, y),
            "mse-combined": _mse(comb[i], y),
            "residual-share": float(np.median(share)) if use_bias_counts[i] else 1.0,
            "mean-residual-reads": float(np.mean(np.exp(r))),
            "mean-bias-reads": float(np.mean(np.exp(b))),
            "checks": [],
            "warnings": [],
        }
        comb_r, res_r, bias_r = h["pearson-combined"], h["pearson-residual"], h["pearson-bias"]
        if use_bias_counts[i]:   # without the bias counts, combined counts = residual counts
            _check(h, "residual share of the predicted counts (validation peaks, median)",
                   f"{h['residual-share']:.3g}", f">= {min_residual_share:g}",
                   h["residual-share"] < min_residual_share,
                   f"head {name}: collapsed residual counts head: the residual predicts a median "
                   f"{100 * h['residual-share']:.2g} % of the counts on validation peaks (threshold "
                   f"{100 * min_residual_share:.2g} %); the bias branch's counts are probably fitted to peak depth "
                   "(fit the counts transformation on background regions: transformation recipe 'bpflow')")
            _check(h, "counts Pearson, combined vs residual alone", f"{comb_r:.3f} vs {res_r:.3f}",
                   f"combined >= residual - {RESIDUAL_PEARSON_MARGIN:g}", comb_r < res_r - RESIDUAL_PEARSON_MARGIN,
                   f"head {name}: adding the bias branch's counts makes the counts worse: Pearson on validation "
                   f"peaks {comb_r:.3f} combined against {res_r:.3f} for the residual "
                   "alone; the bias branch's counts are probably fitted to peak depth (transformation recipe 'bpflow')")
        _check(h, "counts Pearson, combined vs bias branch alone", f"{comb_r:.3f} vs {bias_r:.3f}",
               "combined > bias", not comb_r > bias_r,
               f"head {name}: the combined model's counts Pearson on validation peaks "
               f"({comb_r:.3f}) is not above the bias branch's alone ({bias_r:.3f})")
        out["heads"][name] = h
    return out


def load_qc_motifs(qc: Mapping) -> tuple[dict, dict]:
    """(TF motifs, bias motifs) of a train-combined ``qc`` block: ``truth-json`` (a bpflow
    simulation's truth.json: its motifs and bias motif), then ``motifs`` / ``bias-motifs``
    entries as :func:`bpflow.footprints.load_motifs` takes them (they override)."""
    from bpflow.footprints import load_motifs

    tf, bias = {}, {}
    if qc.get("truth-json"):
        path = qc["truth-json"]
        try:
            with open(path) as fh:
                truth = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            raise BpflowError(f"qc/truth-json: cannot read {path}: {err}") from None
        for m in truth.get("motifs", []):
            tf[m["name"]] = np.asarray(m["probabilities"], dtype=np.float64)
        motif = (truth.get("bias") or {}).get("motif")
        if motif:
            bias["bias-motif"] = str(motif)
    tf.update(qc.get("motifs") or {})
    bias.update(qc.get("bias-motifs") or {})
    return load_motifs(tf) if tf else {}, load_motifs(bias) if bias else {}


def motif_qc(residual, bias, sequences: np.ndarray, tf_motifs: Mapping, bias_motifs: Mapping,
             max_bias_tf_ratio: float = MAX_BIAS_TF_RATIO,
             max_residual_bias_ratio: float = MAX_RESIDUAL_BIAS_RATIO, seed: int = 0,
             head_names: Sequence[str] | None = None) -> dict:
    """Marginal footprints of the residual and the bias branch (profile-response per head).

    ``bias-tf-ratio`` = the bias branch's mean TF-motif response / the residual's (a bias
    model that learned TF motifs has a large one); ``residual-bias-tf-ratio`` = the
    residual's mean bias-motif response / its mean TF-motif response (the truth is 0).
    """
    from bpflow.footprints import footprint_table

    motifs = {**dict(tf_motifs), **dict(bias_motifs)}
    out = {"tf-motifs": list(tf_motifs), "bias-motifs": list(bias_motifs), "num-sequences": int(len(sequences)),
           "max-bias-tf-ratio": max_bias_tf_ratio, "max-residual-bias-ratio": max_residual_bias_ratio,
           "heads": {}}
    if not motifs or not len(sequences):
        return out
    table = footprint_table({"residual": residual, "bias": bias}, sequences, motifs,
                            orientations=("forward", "reverse"), include_profiles=False, seed=seed,
                            head_names=head_names)
    heads = table["models"]["residual"]["heads"]
    for head in heads:
        def mean(model, names):
            v = [abs(float(table["models"][model]["heads"][head][m]["profile-response"])) for m in names]
            return float(np.mean(v)) if v else math.nan

        h = {
            "residual-tf-response": mean("residual", tf_motifs),
            "residual-bias-response": mean("residual", bias_motifs),
            "bias-tf-response": mean("bias", tf_motifs),
            "bias-bias-response": mean("bias", bias_motifs),
            "per-motif": {m: {label: table["models"][label]["heads"][head][m]["profile-response"]
                              for label in ("residual", "bias")} for m in motifs},
            "checks": [],
            "warnings": [],
        }
        rt = h["residual-tf-response"]
        h["bias-tf-ratio"] = h["bias-tf-response"] / rt if rt and rt > 0 else math.nan
        h["residual-bias-tf-ratio"] = h["residual-bias-response"] / rt if rt and rt > 0 else math.nan
        if tf_motifs:
            _check(h, "bias branch's TF-motif response / the residual's", f"{h['bias-tf-ratio']:.4g}",
                   f"<= {max_bias_tf_ratio:g}", h["bias-tf-ratio"] > max_bias_tf_ratio,
                   f"head {head}: the bias model responds to TF motifs ({h['bias-tf-response']:.3g}, "
                   f"{h['bias-tf-ratio']:.2f} x the residual's; threshold {max_bias_tf_ratio}): it probably learned "
                   "TF motifs - train it on regions without TF signal, make it smaller, or use a control")
        if tf_motifs and bias_motifs:
            _check(h, "residual's bias-motif response / its TF-motif response", f"{h['residual-bias-tf-ratio']:.4g}",
                   f"<= {max_residual_bias_ratio:g}", h["residual-bias-tf-ratio"] > max_residual_bias_ratio,
                   f"head {head}: the residual responds to the bias motif(s) ({h['residual-bias-tf-ratio']:.3f} x "
                   f"its TF-motif response; threshold {max_residual_bias_ratio}): the bias is not fully removed")
        out["heads"][head] = h
    return out


def all_warnings(report: dict) -> list[str]:
    """Every warning string of a QC report."""
    out = []
    for part in ("counts", "motifs"):
        for h in (report.get(part) or {}).get("heads", {}).values():
            out += h.get("warnings", [])
    return out
