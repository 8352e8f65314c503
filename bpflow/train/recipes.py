"""The recipes of bias factorization on top of :func:`bpflow.train.loop.fit_model`.

* :func:`fit_transformation_parts` - bpflow's transformation: the profile part trained on the
  peaks, then the counts part fitted in closed form (:func:`fit_counts_offset` /
  :func:`fit_counts_linear`) on background regions, where the bias explains every read.
* :func:`fit_profile_first` - ``counts-schedule`` "profile-first": the profile alone, then the
  counts.
* :func:`center_counts` - the counts heads (bias model, residual) start at the data's mean.
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
from bpflow.train.settings import HeadSpec, TrainSettings, counts_phase_epochs
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.train")

# --------------------------------------------------------------------------- predictions in memory


def _padded_batches(sequences: np.ndarray, batch_size: int):
    """(batch, rows) over in-memory one-hot sequences, each batch float32 and padded to
    ``batch_size`` rows (one compiled shape); ``rows`` is how many are real."""
    for a in range(0, len(sequences), batch_size):
        x = np.asarray(sequences[a : a + batch_size], dtype=np.float32)
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], np.float32)])
        yield x, n


def predict_logcounts(model, sequences: np.ndarray, num_heads: int, batch_size: int = 256) -> list[np.ndarray]:
    """Each head's predicted log counts (N,) float64 of a model over in-memory one-hot
    sequences; batches are padded to ``batch_size`` (one compiled shape)."""
    parts = [[] for _ in range(num_heads)]
    for x, n in _padded_batches(sequences, batch_size):
        out = model.predict_on_batch(x)
        for i in range(num_heads):
            parts[i].append(np.asarray(out[num_heads + i], dtype=np.float64).reshape(-1)[:n])
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def predict_product_offsets(residual, bias, sequences: np.ndarray, num_heads: int, batch_size: int = 256):
    """Per head, what a ``counts-combination`` "product" head adds to the residual's log counts
    (:class:`bpflow.layers.ProductLogCounts`): the bias's log counts plus log(sum(p_bias *
    p_residual)) over the profiles' positions x tasks; (windows,) float64 each."""
    parts = [[] for _ in range(num_heads)]
    for x, n in _padded_batches(sequences, batch_size):
        r_out, b_out = residual.predict_on_batch(x), bias.predict_on_batch(x)
        for i in range(num_heads):
            parts[i].append(_product_offset(r_out[i], b_out[i], b_out[num_heads + i], n))
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def _product_offset(residual_logits, bias_logits, bias_logcounts, n: int) -> np.ndarray:
    """:func:`predict_product_offsets` of one batch's outputs (its first ``n`` rows)."""
    from scipy.special import logsumexp

    r = np.asarray(residual_logits, np.float64)[:n].reshape(n, -1)
    b = np.asarray(bias_logits, np.float64)[:n].reshape(n, -1)
    overlap = logsumexp(b + r, axis=1) - logsumexp(b, axis=1) - logsumexp(r, axis=1)
    return np.asarray(bias_logcounts, np.float64).reshape(-1)[:n] + overlap


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


# the counts phase's warm-up on a cosine: at most its epochs over this (the workflow's default,
# 3 warm-up epochs of a 15-epoch phase), so a shorter phase runs the same rate curve compressed
# instead of a warm-up that eats its cosine (3 of 3 epochs peak at a quarter of the rate)
COSINE_WARMUP_PARTS = 5


def counts_phase_warmup(settings: TrainSettings, counts_epochs: int, schedule: str) -> float:
    """The counts phase's ``learning-rate-warmup-epochs``: the stage's, at most a
    :data:`COSINE_WARMUP_PARTS`-th of the phase's epochs on the cosine (a plateau phase holds
    its rate after the warm-up, so it keeps the stage's)."""
    if schedule != "cosine":
        return settings.warmup_epochs
    return min(settings.warmup_epochs, counts_epochs / COSINE_WARMUP_PARTS)


def phase_checkpoint(checkpoint: Path, phase: str) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}-{phase}{checkpoint.suffix}")


def _phase_summary(name: str, rec: dict, trainable, allowed: int, phase: TrainSettings | None = None) -> dict:
    """A phase's record; ``phase``: the settings it trained with (its rate schedule and warm-up)."""
    return {
        "phase": name,
        "trainable": trainable,
        "epochs-allowed": allowed,
        "schedule": None if phase is None else phase.lr_schedule,
        "learning-rate-warmup-epochs": None if phase is None else phase.warmup_epochs,
        "epochs-run": rec["epochs-run"],
        "best-epoch": rec["best-epoch"],
        "best-val-loss": rec["best-val-loss"],
        "last-significant-epoch": rec.get("last-significant-epoch"),
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
    bias=None,
) -> dict:
    """``settings/counts-schedule`` "profile-first" (train-bias, train-combined).

    Phase 1 trains with a counts loss weight of 0, so the network's body serves the profile
    alone; phase 2 then trains the counts with the heads' counts weights (and
    ``counts-loss-frac-target``), starting from phase 1's best weights, at
    ``counts-phase-learning-rate`` (default: a tenth of ``learning-rate``), held and halved on
    plateaus or, with ``counts-phase-schedule`` "cosine", lowered from there to 0 on a cosine
    over the phase's ``counts-phase-epochs`` (after the same warm-up, at most a fifth of the
    phase: :func:`counts_phase_warmup`).  With
    ``counts-phase-trainable`` "all" (default) every trainable weight moves in phase 2, the
    profile loss included, so the body learns what the counts need without being pulled far
    from the profile optimum; "counts-layers" fits only ``body``'s ``*_logcounts_<head>`` Dense
    layers on the frozen body, by least squares (:func:`fit_counts_layers`, no epochs).
    ``body`` is the model whose counts layers those are (the solo model, or the residual of a
    combined model; ``bias`` the combined model's bias branch).  With "all", phase 2 starts
    from that least-squares fit too (with ``init-counts`` / ``init-residual-counts``), so the
    epochs go to what the frozen features cannot give, not to reaching their optimum.

    ``epochs`` bounds the whole step: phase 1 runs at most ``epochs - counts-phase-epochs``
    epochs (default ``counts-phase-epochs``: a quarter of ``epochs``, from 1 to 15), phase 2 at
    most ``counts-phase-epochs`` (also when phase 1 stopped early: on the quality suite the
    counts phase's best epoch came within its first 15 on every setting, and the epochs a
    shorter phase 1 left only prolonged it).  Each phase has the step's patience and its own
    checkpoint.  With ``profile-phase-stop-delta`` phase 1 also ends at its first plateau (the
    epoch at which the learning rate would halve, its gains measured against that fraction);
    with ``profile-phase-patience-after-halving`` N it ends, once its rate has been halved, after
    N epochs none of which improved on the best by ``early-stopping-min-delta`` (counted from
    the first halving or a later gain): the counts phase that follows trains every weight at a
    tenth of the rate, the settling a lowered rate would give the profile.
    Returns :func:`fit_model`'s record with the two phases' histories joined (``history/phase``
    says which epoch belongs to which), ``phases`` summarising each, and a ``stop-reason`` that
    names the whole budget when it was spent.
    """
    s = config["settings"]
    counts_layers = {
        layer.name for layer in body.layers if any(layer.name.endswith(f"_logcounts_{h.name}") for h in heads)
    }
    profile_heads = [dataclasses.replace(h, counts_weight=0.0, frac_target=None) for h in heads]
    # counts layers on a frozen body: a least-squares problem, solved without epochs
    closed_form = s.get("counts-phase-trainable", "all") == "counts-layers"
    counts_epochs = 0 if closed_form else counts_phase_epochs(s)
    logger.info(
        "counts-schedule profile-first: phase 1 of 2, the profile (counts loss weight 0; at most %d of %d epochs)",
        settings.epochs - counts_epochs,
        settings.epochs,
    )
    # profile-phase-stop-delta: the phase ends where its creep would halve the learning rate
    stop_delta = float(s.get("profile-phase-stop-delta") or 0.0)
    first_settings = dataclasses.replace(settings, epochs=settings.epochs - counts_epochs)
    if stop_delta:
        first_settings = dataclasses.replace(first_settings, plateau_min_delta=stop_delta, plateau_stops=True)
    # profile-phase-patience-after-halving: once the rate is halved, the phase ends sooner
    first_settings = dataclasses.replace(
        first_settings, halved_patience=int(s.get("profile-phase-patience-after-halving") or 0)
    )
    first = fit_model(
        model,
        profile_heads,
        first_settings,
        rt,
        config["train-data"],
        config["val-data"],
        fingerprint_value=f"{fingerprint_value}/profile",
        checkpoint_path=phase_checkpoint(checkpoint_path, "profile"),
        callbacks=callbacks,
    )
    fit = None
    if closed_form or s.get("init-residual-counts" if bias is not None else "init-counts", True):
        logger.info("counts-schedule profile-first: the counts layers by least squares on the profile-trained body")
        fit = fit_counts_layers(body, heads, config["train-data"], config["val-data"], bias=bias)
    if closed_form:
        second = _empty_record(heads, "counts layers fitted by least squares on the frozen body (no epochs)")
        second.update({"best-epoch": first["best-epoch"], "best-val-loss": first["best-val-loss"], "counts-fit": fit})
        record = dict(first)
        record.update(
            {
                "counts-fit": fit,
                "stop-reason": first["stop-reason"],
                "history": {**first["history"], "phase": [PHASES[0]] * len(first["history"]["epoch"])},
                "phases": [
                    _phase_summary(PHASES[0], first, "all", settings.epochs, first_settings),
                    _phase_summary(PHASES[1], second, sorted(counts_layers), 0),
                ],
            }
        )
        return record
    schedule = s.get("counts-phase-schedule", "plateau")
    phase_settings = dataclasses.replace(
        settings,
        learning_rate=float(s.get("counts-phase-learning-rate", settings.learning_rate / 10)),
        epochs=counts_epochs,
        lr_schedule=schedule,
        warmup_epochs=counts_phase_warmup(settings, counts_epochs, schedule),
    )
    logger.info(
        "counts-schedule profile-first: phase 2 of 2, the counts (all weights trainable, learning rate %.4g%s%s)",
        phase_settings.learning_rate,
        f", after a {phase_settings.warmup_epochs:g}-epoch warm-up" if phase_settings.warmup_epochs else "",
        ", on a cosine to 0 over the phase's epochs" if phase_settings.lr_schedule == "cosine" else "",
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
        keep_compiled=True,  # the profile phase's compiled steps, its optimizer restarted
    )
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
            "last-significant-epoch": None
            if second.get("last-significant-epoch") is None
            else second["last-significant-epoch"] + offset,
            "epochs-run": first["epochs-run"] + second["epochs-run"],
            "stop-reason": _stage_stop_reason(first, second, settings.epochs),
            "phases": [
                _phase_summary(PHASES[0], first, "all", settings.epochs - counts_epochs, first_settings),
                _phase_summary(PHASES[1], second, "all", phase_settings.epochs, phase_settings),
            ],
        }
    )
    if fit is not None:
        record["counts-fit"] = fit
    return record


def _stage_stop_reason(first: dict, second: dict, epochs: int) -> str:
    """The stage's stop-reason: the counts phase's early stop, the whole budget spent, or the
    counts phase's own epochs spent after a profile phase that stopped early (by early
    stopping or, with profile-phase-stop-delta, its plateau)."""
    offset, counts = first["epochs-run"], second["epochs-run"]
    if second["stopped-early"]:
        return _phase_stop_reason(second, offset)
    if offset + counts >= epochs:
        return f"finished all {epochs} epochs ({offset} profile, {counts} counts)"
    how = first["stop-reason"].split(":")[0]
    return f"finished the counts phase's {counts} epochs ({offset} profile, {how}; {counts} counts)"


def _phase_stop_reason(second: dict, offset: int) -> str:
    """The stage's stop-reason when the counts phase (after ``offset`` profile epochs) stopped
    early, in the stage's epoch numbering (the phase's own record counts from 1)."""
    best = second["best-epoch"]
    last = offset + second["epochs-run"]
    where = f"epoch {best + offset} of the stage" if best is not None else "none"
    return (
        f"early stopping in the counts phase (epochs {offset + 1}-{last}): "
        f"{second['stop-reason'].split(' (best:')[0].removeprefix('early stopping: ')} (best: {where})"
    )


def center_counts(model, heads: Sequence[HeadSpec], train_data, bias=None, max_samples: int = 2048) -> dict:
    """Start each head's counts where the data are, by shifting the bias of its counts Dense
    layer (``<model name>_logcounts_<head>``) on (at most ``max_samples`` evenly spaced)
    training windows:

    * a solo model, or a residual without bias counts: the mean predicted log counts becomes
      the mean of log(1 + total), the constant that minimises the counts MSE;
    * a residual whose head adds ``bias``'s counts (``use-bias-counts``): the mean predicted
      reads exp(residual) become mean(1 + total) - mean(exp(bias)) (at least 5 % of
      mean(1 + total)), so that the combined model starts at the mean total;
    * a residual whose head multiplies them (``counts-combination`` "product"): the mean
      combined log counts become the mean of log(1 + total).

    A Dense layer's default start predicts ~0 where log counts are often 3 to 8; a counts head
    trained at a small learning rate then spends its epochs climbing (issue 17: MSE 3.7 -> 1.05
    in 30 epochs), and a residual starting near one read spends its first epochs on the counts
    error at the expense of the profile.  Returns {head: the target} (a mean log count for a
    solo model, the log of the residual's mean reads for a residual with bias counts)."""
    input_length, output_length = model.inputs[0].shape[1], model.outputs[0].shape[1]
    seqs, totals = read_windows(as_list(train_data), input_length, output_length, len(heads), max_samples=max_samples)
    if not len(seqs):
        return {}
    predicted = predict_logcounts(model, seqs, len(heads))
    bias_lc = product = None  # the bias counts of sum heads; the offsets (bias counts included) of product heads
    if bias is not None and any(h.use_bias_counts and not h.product_counts for h in heads):
        bias_lc = predict_logcounts(bias, seqs, len(heads))
    if bias is not None and any(h.product_counts for h in heads):
        product = predict_product_offsets(model, bias, seqs, len(heads))
    out = {}
    for i, h in enumerate(heads):
        if product is not None and h.product_counts:
            target = float(np.mean(np.log1p(totals[:, i]) - product[i]))
            shift = target - float(np.mean(predicted[i]))
        elif bias_lc is not None and h.use_bias_counts:
            mean_total = float(np.mean(1.0 + totals[:, i]))
            rest = max(mean_total - float(np.mean(np.exp(bias_lc[i]))), 0.05 * mean_total)
            target = math.log(rest)
            shift = target - math.log(float(np.mean(np.exp(predicted[i]))))
        else:
            target = float(np.mean(np.log1p(totals[:, i])))
            shift = target - float(np.mean(predicted[i]))
        dense = _counts_dense(model, h.name)
        dense.bias.assign(np.asarray(dense.bias) + np.float32(shift))
        out[h.name] = target
        logger.info(
            "counts of head %s (%s) start at the training windows' mean (target %.4g)", h.name, model.name, target
        )
    return out


RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def fit_counts_layers(
    body, heads: Sequence[HeadSpec], train_data, val_data, bias=None, max_samples: int = 50000
) -> dict:
    """Fit each head's counts Dense layer of ``body`` on its frozen features by penalised least
    squares: log(1 + total) of (at most ``max_samples`` evenly spaced) training windows against
    the head's predicted log counts - the Dense's output itself, or, for a residual head that
    adds ``bias``'s counts (``use-bias-counts``), log(exp(bias) + exp(output)), or, for one
    that multiplies them (``counts-combination`` "product"), the output plus the offset of
    :func:`predict_product_offsets`.  The first and the last are linear (ridge regression, one
    solve); the second is solved by Gauss-Newton (:func:`ridge_counts`).  The ridge (relative
    to the mean feature variance; intercept not penalised) is the one of :data:`RIDGES` with
    the lowest MSE on the validation windows: the counts MSE's optimum on a frozen body, in
    seconds, with no more weight than the held-out data support.  Returns, per head, the ridge
    and the MSE before and after on both splits."""
    input_length, output_length = body.inputs[0].shape[1], body.outputs[0].shape[1]
    n = len(heads)
    out = {"method": "ridge", "heads": {}}
    sets = {}
    for split, files in (("train", train_data), ("val", val_data)):
        sets[split] = read_windows(as_list(files), input_length, output_length, n, max_samples=max_samples)
    # one pass over each split: the features, the body's own counts, the bias's counts and the
    # offsets of product heads
    passes = {split: _counts_inputs(body, bias, heads, seqs) for split, (seqs, _) in sets.items()}
    own = {split: p["own"] for split, p in passes.items()}
    added = {split: p["added"] for split, p in passes.items()}
    product = {split: p["product"] for split, p in passes.items()}
    for i, h in enumerate(heads):
        # a product head's counts are the residual's plus a known offset: linear in the features
        b = (
            {split: added[split][i] for split in sets}
            if added["train"][i] is not None and h.use_bias_counts
            else dict.fromkeys(sets)
        )
        offset = dict.fromkeys(sets, 0.0)
        if product["train"][i] is not None:
            b, offset = dict.fromkeys(sets), {split: product[split][i] for split in sets}
        dense = _counts_dense(body, h.name)
        x = {
            split: np.concatenate([passes[split]["features"][i], np.ones((len(seqs), 1))], axis=1)
            for split, (seqs, _) in sets.items()
        }
        y = {split: np.log1p(totals[:, i]) - offset[split] for split, (_, totals) in sets.items()}
        fits = []
        for ridge in RIDGES:
            w = ridge_counts(x["train"], y["train"], b["train"], ridge)
            val = _mse(_head_counts(x["val"] @ w, b["val"]), y["val"]) if len(y["val"]) else 0.0
            fits.append((val, ridge, w))
        _, ridge, w = min(fits, key=lambda f: f[0])
        dense.kernel.assign(w[:-1, None].astype(np.float32))
        dense.bias.assign(np.full(dense.bias.shape, w[-1], dtype=np.float32))
        entry = {
            "ridge": ridge,
            "bias-counts": "product" if product["train"][i] is not None else b["train"] is not None,
        }
        for split in sets:
            entry[f"{split}-mse-before"] = _mse(_head_counts(own[split][i], b[split]), y[split])
            entry[f"{split}-mse-after"] = _mse(_head_counts(x[split] @ w, b[split]), y[split])
        out["heads"][h.name] = entry
        logger.info(
            "counts layer of head %s by least squares: train MSE %.4g -> %.4g, val MSE %.4g -> %.4g",
            h.name,
            entry["train-mse-before"],
            entry["train-mse-after"],
            entry["val-mse-before"],
            entry["val-mse-after"],
        )
    return out


def _head_counts(own, added=None) -> np.ndarray:
    """A head's log counts from its own output and, with bias counts, the bias's."""
    return np.asarray(own, np.float64) if added is None else np.logaddexp(added, own)


def ridge_counts(x: np.ndarray, y: np.ndarray, added=None, ridge: float = 0.0, iterations: int = 50) -> np.ndarray:
    """Weights ``w`` (last: the intercept) minimising ||y - f(x @ w)||^2 + ridge * scale *
    ||w[:-1]||^2, where ``x`` ends with a column of ones, ``scale`` is the number of rows times
    the mean variance of the other columns and f(r) = r, or log(exp(added) + exp(r)) with ``added``.  Linear: one solve.
    With ``added``: Levenberg-Marquardt from the linear fit to log(max(exp(y) - exp(added),
    exp(y) / 20)) (the residual's share of the reads), each step accepted only if it lowers the
    objective."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = len(x) * float(np.mean(np.var(x[:, :-1], axis=0))) if x.shape[1] > 1 else 0.0
    penalty = np.full(x.shape[1], ridge * max(scale, 1e-12))
    penalty[-1] = 0.0

    def solve(jac, rhs, damping=0.0):
        gram = jac.T @ jac
        return np.linalg.solve(gram + np.diag(penalty) + damping * np.diag(np.diag(gram) + 1e-12), rhs)

    if added is None:
        return solve(x, x.T @ y)
    added = np.asarray(added, np.float64)
    target = np.log(np.maximum(np.expm1(y) + 1.0 - np.exp(added), np.exp(y) / 20.0))
    w = solve(x, x.T @ target)

    def objective(w):
        return float(np.sum((y - np.logaddexp(added, x @ w)) ** 2) + w @ (penalty * w))

    current, damping = objective(w), 1e-3
    for _ in range(iterations):
        r = x @ w
        f = np.logaddexp(added, r)
        jac = np.exp(r - f)[:, None] * x
        step = solve(jac, jac.T @ (y - f) - penalty * w, damping)
        trial = objective(w + step)
        if trial < current:
            w, improvement, current = w + step, current - trial, trial
            damping = max(damping / 3, 1e-9)
            if improvement <= 1e-10 * max(current, 1e-12):
                break
        else:
            damping *= 10
            if damping > 1e8:
                break
    return w


def _counts_inputs(body, bias, heads: Sequence[HeadSpec], sequences: np.ndarray, batch_size: int = 256) -> dict:
    """What :func:`fit_counts_layers` needs of ``body`` (and ``bias``) over in-memory one-hot
    sequences, in one pass of each model: per head, the input of its counts Dense
    (``features``, windows x features), the body's log counts (``own``), the bias's log counts
    (``added``; None without ``bias`` or when no head adds them) and the offset of a product
    head (:func:`predict_product_offsets`; ``product``, None for other heads); float64."""
    n = len(heads)
    if bias is not None and not any(h.use_bias_counts for h in heads):
        bias = None
    probe = keras.Model(body.inputs, [_counts_dense(body, h.name).input for h in heads] + list(body.outputs))
    parts = {key: [[] for _ in range(n)] for key in ("features", "own", "added", "product")}
    for x, rows in _padded_batches(sequences, batch_size):
        outs = probe.predict_on_batch(x)
        features, logits, logcounts = outs[:n], outs[n : 2 * n], outs[2 * n :]
        b_out = None if bias is None else bias.predict_on_batch(x)
        for i, h in enumerate(heads):
            parts["features"][i].append(np.asarray(features[i], np.float64)[:rows])
            parts["own"][i].append(np.asarray(logcounts[i], np.float64).reshape(-1)[:rows])
            if b_out is not None:
                parts["added"][i].append(np.asarray(b_out[n + i], np.float64).reshape(-1)[:rows])
            if b_out is not None and h.product_counts:
                parts["product"][i].append(_product_offset(logits[i], b_out[i], b_out[n + i], rows))
    empty = {"features": [np.zeros((0, int(f.shape[-1]))) for f in probe.outputs[:n]], "own": [np.zeros(0)] * n}
    empty["added"] = [np.zeros(0) if bias is not None else None] * n
    empty["product"] = [np.zeros(0) if bias is not None and h.product_counts else None for h in heads]
    return {key: [np.concatenate(p) if p else e for p, e in zip(lists, empty[key])] for key, lists in parts.items()}


def _counts_dense(model, head: str):
    """The counts Dense layer ``<model name>_logcounts_<head>`` of a solo model."""
    suffix = f"_logcounts_{head}"
    layers = [layer for layer in model.layers if layer.name.endswith(suffix)]
    if len(layers) != 1:
        raise BpflowError(f"model {model.name!r}: no single counts layer *{suffix}")
    return layers[0]
