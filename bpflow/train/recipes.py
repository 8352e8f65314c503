"""The recipes of bias factorization on top of :func:`bpflow.train.loop.fit_model`.

* :func:`fit_transformation_parts` - bpflow's transformation: the profile part trained on the
  peaks, then the counts part fitted in closed form (:func:`fit_counts_offset` /
  :func:`fit_counts_linear`) on background regions, where the bias explains every read.
* :func:`fit_profile_first` - ``counts-schedule`` "profile-first": the profile alone, then the
  counts.
* :func:`init_residual_counts` - the residual's counts head starts at the data's mean.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from bpflow.formats.dataset import as_list, read_windows
from bpflow.train.loop import fit_model
from bpflow.train.runtime import Runtime
from bpflow.train.settings import HeadSpec, TrainSettings
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.train")

# --------------------------------------------------------------------------- predictions in memory


def predict_logcounts(model, sequences: np.ndarray, num_heads: int, batch_size: int = 256) -> list[np.ndarray]:
    """Each head's predicted log counts (N,) float64 of a model over in-memory one-hot
    sequences; batches are padded to ``batch_size`` (one compiled shape)."""
    parts = [[] for _ in range(num_heads)]
    for a in range(0, len(sequences), batch_size):
        x = np.asarray(sequences[a : a + batch_size], dtype=np.float32)
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], np.float32)])
        out = model.predict_on_batch(x)
        for i in range(num_heads):
            parts[i].append(np.asarray(out[num_heads + i], dtype=np.float64).reshape(-1)[:n])
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


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
        raise BpflowError(f"{layer.name}: a closed-form counts fit needs a simple transformation with a linear term")
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


def fit_counts_transform(
    model, solo, head_names: Sequence[str], train_files, val_files, method: str, input_length: int, output_length: int
) -> dict:
    """Fit each head's counts transformation of ``model`` (a transformation model around the
    frozen ``solo``) on the windows of ``train_files``; report MSEs on ``val_files``."""
    fit = COUNTS_FITS[method]
    n = len(head_names)
    seq_t, tot_t = read_windows(train_files, input_length, output_length, n)
    seq_v, tot_v = read_windows(val_files, input_length, output_length, n)
    if not len(seq_t):
        raise BpflowError("counts-train-data: no samples")
    pred_t = predict_logcounts(solo, seq_t, n)
    pred_v = predict_logcounts(solo, seq_v, n)
    out = {"method": method, "train-samples": int(len(seq_t)), "val-samples": int(len(seq_v)), "heads": {}}
    for i, name in enumerate(head_names):
        y_t, y_v = np.log1p(tot_t[:, i]), np.log1p(tot_v[:, i])
        slope, offset = fit(pred_t[i], y_t)
        set_linear_transform(model.get_layer(f"transformation_logcounts_{name}"), slope, offset)
        out["heads"][name] = {
            "slope": slope,
            "offset": offset,
            "train-mse-before": _mse(pred_t[i], y_t),
            "train-mse-after": _mse(slope * pred_t[i] + offset, y_t),
            "val-mse-before": _mse(pred_v[i], y_v),
            "val-mse-after": _mse(slope * pred_v[i] + offset, y_v),
            "mean-observed-log": float(np.mean(y_t)),
        }
        h = out["heads"][name]
        logger.info(
            "counts transformation %s (%s on %d windows): slope %.4g offset %+.4g; val MSE %.4g -> %.4g",
            name,
            method,
            len(seq_t),
            slope,
            offset,
            h["val-mse-before"],
            h["val-mse-after"],
        )
    return out


def _empty_record(heads: Sequence[HeadSpec], reason: str) -> dict:
    """A fit_model-like record for a part with nothing to train."""
    return {
        "initial": {},
        "history": {"epoch": []},
        "best-epoch": None,
        "best-val-loss": None,
        "epochs-run": 0,
        "stopped-early": False,
        "stop-reason": reason,
        "final-counts-loss-weight": {h.name: 0.0 for h in heads},
        "final-learning-rate": None,
        "train-samples": 0,
        "val-samples": 0,
        "train-counts": {},
        "val-counts": {},
    }


def fit_transformation_parts(
    model,
    config: dict,
    heads: Sequence[HeadSpec],
    settings: TrainSettings,
    rt: Runtime,
    *,
    fingerprint_value: str,
    checkpoint_path=None,
    callbacks=(),
) -> dict:
    """bpflow's transformation recipe: the profile part trained on ``train-data`` / ``val-data``
    (the peaks: the counts part frozen, counts loss weight 0), then the counts part fitted in
    closed form (``settings/counts-fit``: "shift" or "linear", :func:`fit_counts_transform`) to
    log(1 + observed total) on ``counts-train-data`` (background regions, where the bias
    explains all reads), its MSE reported on ``counts-val-data``.

    Returns :func:`fit_model`'s record of the profile part plus ``counts-fit``.
    """
    s = config["settings"]
    for h in heads:
        model.get_layer(f"transformation_logcounts_{h.name}").trainable = False
    profile_heads = [dataclasses.replace(h, counts_weight=0.0, frac_target=None) for h in heads]
    if s["profile-architecture"]["name"] == "passthrough":
        logger.info("profile transformation: passthrough, nothing to train")
        record = _empty_record(heads, "profile transformation is passthrough: nothing to train")
    else:
        logger.info("profile transformation: trained on train-data (counts part frozen)")
        record = fit_model(
            model,
            profile_heads,
            settings,
            rt,
            config["train-data"],
            config["val-data"],
            fingerprint_value=fingerprint_value,
            checkpoint_path=checkpoint_path,
            callbacks=callbacks,
        )
    solo = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    record["counts-fit"] = fit_counts_transform(
        model,
        solo,
        [h.name for h in heads],
        config["counts-train-data"],
        config["counts-val-data"],
        s.get("counts-fit", "shift"),
        s["input-length"],
        s["output-length"],
    )
    record["recipe"] = "profile on train-data, counts on counts-train-data"
    return record


PHASES = ("profile", "counts")


def phase_checkpoint(checkpoint: Path, phase: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}-{phase}{checkpoint.suffix}")


def _phase_summary(name: str, rec: dict, trainable) -> dict:
    return {
        "phase": name,
        "trainable": trainable,
        "epochs-run": rec["epochs-run"],
        "best-epoch": rec["best-epoch"],
        "best-val-loss": rec["best-val-loss"],
        "stop-reason": rec["stop-reason"],
        "final-learning-rate": rec["final-learning-rate"],
    }


def fit_profile_first(
    model,
    body,
    config: dict,
    heads: Sequence[HeadSpec],
    settings: TrainSettings,
    rt: Runtime,
    *,
    fingerprint_value: str,
    checkpoint_path: Path,
    callbacks=(),
) -> dict:
    """``settings/counts-schedule`` "profile-first" (train-solo, train-combined).

    Phase 1 trains with a counts loss weight of 0, so the network's body serves the profile
    alone; phase 2 then trains the counts with the heads' counts weights (and
    ``counts-loss-frac-target``), starting from phase 1's best weights, at
    ``counts-phase-learning-rate`` (default: a tenth of ``learning-rate``).  With
    ``counts-phase-trainable`` "all" (default) every trainable weight moves in phase 2, the
    profile loss included, so the body learns what the counts need without being pulled far
    from the profile optimum; "counts-layers" trains only ``body``'s ``*_logcounts_<head>``
    Dense layers on the frozen body.  ``body`` is the model whose counts layers those are (the
    solo model, or the residual of a combined model).  Each phase has the step's epochs and
    patience and its own checkpoint.  Returns :func:`fit_model`'s record with the two phases'
    histories joined (``history/phase`` says which epoch belongs to which) and ``phases``
    summarising each.
    """
    s = config["settings"]
    counts_layers = {
        layer.name for layer in body.layers if any(layer.name.endswith(f"_logcounts_{h.name}") for h in heads)
    }
    profile_heads = [dataclasses.replace(h, counts_weight=0.0, frac_target=None) for h in heads]
    logger.info("counts-schedule profile-first: phase 1 of 2, the profile (counts loss weight 0)")
    first = fit_model(
        model,
        profile_heads,
        settings,
        rt,
        config["train-data"],
        config["val-data"],
        fingerprint_value=f"{fingerprint_value}/profile",
        checkpoint_path=phase_checkpoint(checkpoint_path, "profile"),
        callbacks=callbacks,
    )
    trainable = s.get("counts-phase-trainable", "all")
    frozen = []
    if trainable == "counts-layers":
        frozen = [layer for layer in body.layers if layer.name not in counts_layers and layer.trainable]
    for layer in frozen:
        layer.trainable = False
    phase_settings = dataclasses.replace(
        settings, learning_rate=float(s.get("counts-phase-learning-rate", settings.learning_rate / 10))
    )
    try:
        logger.info(
            "counts-schedule profile-first: phase 2 of 2, the counts (%s trainable, learning rate %.4g)",
            "all weights" if not frozen else ", ".join(sorted(counts_layers)),
            phase_settings.learning_rate,
        )
        second = fit_model(
            model,
            heads,
            phase_settings,
            rt,
            config["train-data"],
            config["val-data"],
            fingerprint_value=f"{fingerprint_value}/counts",
            checkpoint_path=phase_checkpoint(checkpoint_path, "counts"),
            callbacks=callbacks,
        )
    finally:
        for layer in frozen:
            layer.trainable = True
    offset = first["epochs-run"]
    history = {}
    for key, values in first["history"].items():
        later = second["history"].get(key, [])
        history[key] = list(values) + ([e + offset for e in later] if key == "epoch" else list(later))
    history["phase"] = [PHASES[0]] * len(first["history"]["epoch"]) + [PHASES[1]] * len(second["history"]["epoch"])
    record = dict(second)
    record.update(
        {
            "initial": first["initial"],
            "history": history,
            "best-epoch": None if second["best-epoch"] is None else second["best-epoch"] + offset,
            "epochs-run": first["epochs-run"] + second["epochs-run"],
            "phases": [
                _phase_summary(PHASES[0], first, "all"),
                _phase_summary(PHASES[1], second, "all" if not frozen else sorted(counts_layers)),
            ],
        }
    )
    return record


def init_residual_counts(residual, bias, heads: Sequence[HeadSpec], train_data, max_samples: int = 2048) -> dict:
    """Start the residual's counts where the data are: each head's counts Dense bias is set so
    that the untrained combined model predicts the mean total counts of the training windows,
    log(mean(1 + total) - mean(exp(bias log counts))) with bias counts (at least 5 % of the
    mean), log(mean(1 + total)) without.  Otherwise the first epochs of a combined model whose
    bias branch predicts the bias level (recipe bpflow) go to the counts error of a residual
    starting near 0 reads, at the expense of the profile.  Returns {head: value}."""
    input_length, output_length = residual.inputs[0].shape[1], residual.outputs[0].shape[1]
    seqs, totals = read_windows(as_list(train_data), input_length, output_length, len(heads), max_samples=max_samples)
    if not len(seqs):
        return {}
    bias_lc = predict_logcounts(bias, seqs, len(heads))
    out = {}
    for i, h in enumerate(heads):
        target = float(np.mean(1.0 + totals[:, i]))
        if h.use_bias_counts:
            rest = target - float(np.mean(np.exp(bias_lc[i].astype(np.float64))))
            value = math.log(max(rest, 0.05 * target))
        else:
            value = math.log(target)
        dense = residual.get_layer(f"residual_logcounts_{h.name}")
        dense.bias.assign(np.full(dense.bias.shape, value, dtype=np.float32))
        out[h.name] = value
        logger.info(
            "residual counts of head %s start at log %.4g reads (mean training total %.4g)", h.name, value, target - 1
        )
    return out
