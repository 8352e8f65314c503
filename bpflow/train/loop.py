"""The training loop shared by every stage: :func:`fit_model`.

It takes any model with BPReveal's output order (each head's profile logits, then each
head's log counts) and:

- streams batches from the HDF5 files (:class:`bpflow.train.batcher.H5Batcher`);
- minimises, per head, ``profile-loss-weight`` x multinomial NLL + lambda x MSE of the log
  counts, the counts target being ``log(1 + total counts of the head in the window)``;
- adapts lambda to ``counts-loss-frac-target`` (:func:`update_counts_weight`), stops early and
  halves the learning rate on a plateau (or, for profile-first's profile phase with
  ``profile-phase-stop-delta``, stops there; with ``profile-phase-patience-after-halving``
  that phase stops sooner once the rate has been halved), comparing validation losses
  re-expressed with the current lambda;
- ramps the learning rate up over the first ``learning-rate-warmup-epochs`` epochs and, with
  the ``cosine`` schedule (profile-first's ``counts-phase-schedule``), lowers it to 0 on a
  cosine over the run's steps instead of halving it on a plateau (:func:`rate_factor`);
- checkpoints after every epoch and resumes from the checkpoint when run again;
- stops at once on a NaN or infinite loss;
- trains data-parallel over every device when asked (:mod:`bpflow.train.runtime`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from bpflow.losses import CountsMSE, MultinomialNLL, multinomial_nll, squared_error
from bpflow.train.batcher import H5Batcher
from bpflow.train.runtime import Runtime
from bpflow.train.settings import HeadSpec, TrainSettings
from bpflow.utils import BpflowError, atomic_output, first_line

logger = logging.getLogger("bpflow.train")


def _os_error(err: BaseException) -> OSError | None:
    """``err`` or the first OSError it was raised from (Keras and matplotlib may wrap one)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def writing(path, what: str, hint: str = ""):
    """Turn an OSError on writing ``what`` to ``path`` (a full disk, a read-only or missing
    directory, a quota) into a one-line :class:`BpflowError` naming the path (then ``hint``);
    the write itself must be atomic (:func:`bpflow.utils.atomic_output`), so nothing
    half-written stays."""
    try:
        yield
    except BpflowError:
        raise
    except Exception as err:
        os_err = _os_error(err)
        if os_err is None:
            raise
        if os_err.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on device" if os_err.errno == errno.ENOSPC else "disk quota exceeded"
        else:
            reason = os_err.strerror or first_line(os_err)
        raise BpflowError(f"{path}: cannot write the {what}: {reason}" + (f"; {hint}" if hint else "")) from None


CHECKPOINT_FORMAT = "bpflow-checkpoint/1"

# BPReveal's starting lambda when only counts-loss-frac-target is given:
# INITIAL_LAMBDA_FACTOR * mean total counts per training window * target.
INITIAL_LAMBDA_FACTOR = 37.0

# --------------------------------------------------------------------------- adaptive lambda


def initial_counts_weight(mean_counts: float, frac_target: float) -> float:
    """BPReveal's starting lambda: 37 x mean total counts per training window x target."""
    return INITIAL_LAMBDA_FACTOR * float(mean_counts) * float(frac_target)


def update_counts_weight(
    weight: float, profile_loss: float, counts_loss: float, frac_target: float, epoch: int
) -> float:
    """The counts-loss weight (lambda) for the epoch after ``epoch`` (0-based).

    Aims for ``lambda * c / (lambda * c + p) = t``: the candidate is ``t * p / ((1 - t) * c)``
    where ``p`` is the head's weighted profile loss and ``c`` its raw counts loss.  After
    epochs 0 and 1 lambda jumps to the candidate, changing by at most 10x; later it moves to
    ``0.3 * candidate + 0.7 * lambda``, changing by at most 2x.
    """
    t = float(frac_target)
    if counts_loss > 0:
        candidate = t * profile_loss / ((1.0 - t) * counts_loss)
    else:
        candidate = math.inf  # counts already perfect: raise lambda as far as allowed
    if epoch <= 1:
        new, factor = candidate, 10.0
    else:
        new, factor = 0.3 * candidate + 0.7 * weight, 2.0
    return float(min(max(new, weight / factor), weight * factor))


# --------------------------------------------------------------------------- compile


def check_outputs(model, heads: Sequence[HeadSpec], where: str | None = None) -> tuple[list[str], list[str]]:
    """(profile output names, counts output names) of ``model``; a one-line error (prefixed by
    ``where``, default the model's name) unless it has a profile and a counts output per head
    with each head's num-tasks."""
    where = where or f"model {model.name!r}"
    names = list(model.output_names)
    n = len(heads)
    if len(names) != 2 * n:
        raise BpflowError(
            f"{where}: the model has {len(names)} outputs, but the config has {n} head(s) "
            f"(expected {2 * n}: a profile and a counts output per head)"
        )
    for i, head in enumerate(heads):
        tasks = model.outputs[i].shape[-1]
        if tasks != head.num_tasks:
            raise BpflowError(
                f"{where}: the model's head {i} has {tasks} task(s), but the config's head "
                f"{head.name!r} has num-tasks {head.num_tasks}"
            )
    return names[:n], names[n:]


class _CountsLossWeights(keras.layers.Layer):
    """Holds the lambda variables that :func:`compile_model` attaches to a model.

    A model tracks a layer attribute's variables (so the JAX backend passes them to the compiled
    step as state); ``.keras`` saving writes them under this layer's own path, which a loaded
    model, rebuilt from its config without it, skips - so a model saved while compiled for
    training (a checkpointing callback) loads again.  Never part of the model's graph.
    """

    def __init__(self, lambdas):
        super().__init__(name="bpflow_counts_loss_weights", trainable=False)
        self.lambdas = list(lambdas)
        self.built = True


def compile_model(
    model, heads: Sequence[HeadSpec], learning_rate: float, counts_weights: Sequence[float], jit_compile="auto"
) -> list:
    """Compile ``model`` with bpflow's losses; return the lambda variables (one per head).

    Losses: ``profile-loss-weight`` x :class:`MultinomialNLL` per profile output and
    :class:`CountsMSE` (weight lambda) per counts output.  Weighted metrics ``nll`` and ``mse``
    report the raw (unweighted) terms.  The lambda variables are attached to the model
    (in a :class:`_CountsLossWeights` layer, attribute ``bpflow_counts_loss_weights``) so that
    the JAX backend reads them as state instead of baking them into the compiled step;
    :func:`detach_counts_weights` removes them.
    """
    check_outputs(model, heads)
    detach_counts_weights(model)  # a model compiled before (an earlier stage) keeps no stale lambda
    losses = [MultinomialNLL(name=f"profile_nll_{i}") for i in range(len(heads))]
    counts = [CountsMSE(w, name=f"counts_mse_{i}") for i, w in enumerate(counts_weights)]
    weights = [h.profile_weight for h in heads] + [1.0] * len(heads)
    metrics = [[keras.metrics.MeanMetricWrapper(multinomial_nll, name="nll")] for _ in heads] + [
        [keras.metrics.MeanMetricWrapper(squared_error, name="mse")] for _ in heads
    ]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=losses + counts,
        loss_weights=weights,
        weighted_metrics=metrics,
        jit_compile=jit_compile,
    )
    variables = [loss.weight for loss in counts]
    model.bpflow_counts_loss_weights = _CountsLossWeights(variables)
    model._bpflow_compiled = _compile_key(model, heads, jit_compile)
    return variables


def _compile_key(model, heads: Sequence[HeadSpec], jit_compile) -> tuple:
    """What a compiled step depends on besides the lambda variables and the optimizer's state."""
    return (tuple(h.profile_weight for h in heads), str(jit_compile), tuple(id(v) for v in model.trainable_variables))


def restart_compiled(
    model, heads: Sequence[HeadSpec], learning_rate: float, counts_weights: Sequence[float], jit_compile="auto"
) -> list:
    """:func:`compile_model`'s effect without compiling again, for a model that
    :func:`compile_model` compiled for the same heads' profile weights and trainable weights
    (profile-first's counts phase after its profile phase): the lambda variables take
    ``counts_weights`` and the optimizer starts afresh (Adam's moments and step count 0, the
    rate ``learning_rate``), so the run is that of a fresh compile while the compiled training
    and evaluation steps are kept (~4 s of compilation on the suite's CPU).  Falls back to
    :func:`compile_model` for any other model or optimizer.  Returns the lambda variables."""
    holder = getattr(model, "bpflow_counts_loss_weights", None)
    variables = list(holder.lambdas) if holder is not None else []
    same = getattr(model, "_bpflow_compiled", None) == _compile_key(model, heads, jit_compile)
    # Adam's state restarts at zeros; a wrapped one (mixed precision's loss scaling) holds state
    # that does not, so it is compiled afresh
    same = same and type(getattr(model, "optimizer", None)) is keras.optimizers.Adam
    # the key fixes the number of heads; detach_counts_weights may have removed the lambdas since
    if not same or len(variables) != len(heads):
        return compile_model(model, heads, learning_rate, counts_weights, jit_compile)
    for var, w in zip(variables, counts_weights):
        var.assign(np.float32(w))
    optimizer = model.optimizer
    rate = getattr(optimizer, "_learning_rate", None)
    for var in optimizer.variables:
        if var is not rate:
            var.assign(keras.ops.zeros(var.shape, var.dtype))
    optimizer.learning_rate = learning_rate
    return variables


def detach_counts_weights(model) -> None:
    """Remove the lambda variables that :func:`compile_model` attached to ``model``."""
    holder = getattr(model, "bpflow_counts_loss_weights", None)
    if holder is not None:
        # a layer attribute stays tracked (its variables among the model's) until untracked
        model._tracker.untrack(holder)
        delattr(model, "bpflow_counts_loss_weights")


def _value(variable) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable.value))


def _model_variables(model, exclude) -> list:
    ids = {id(v) for v in exclude}
    return [v for v in model.weights if id(v) not in ids]


def copy_weights(source, target, exclude=()) -> None:
    """Copy weights between two builds of the same architecture, matched by variable path
    (by position when paths are not unique)."""
    src = _model_variables(source, exclude)
    dst = list(target.weights)
    src_paths = [v.path for v in src]
    dst_paths = [v.path for v in dst]
    if len(set(src_paths)) == len(src) and sorted(src_paths) == sorted(dst_paths):
        by_path = {v.path: v for v in src}
        pairs = [(by_path[v.path], v) for v in dst]
    elif len(src) == len(dst):
        pairs = list(zip(src, dst))
    else:
        raise BpflowError(
            f"cannot copy weights of {source.name!r} ({len(src)} variables) to {target.name!r} ({len(dst)} variables)"
        )
    for s, d in pairs:
        value = _value(s)
        if tuple(value.shape) != tuple(d.shape):
            raise BpflowError(f"weight {s.path} has shape {value.shape}, the rebuilt model expects {d.shape}")
        d.assign(value)


# --------------------------------------------------------------------------- callbacks


class _NanWatch(keras.callbacks.Callback):
    """Flags the first batch whose running training loss is NaN or infinite and stops fit.

    The loss is read in Keras's helper threads (``async_safe``: no device sync per step); the
    stop is requested from ``on_train_batch_begin`` in the training loop's own thread (setting
    ``stop_training`` from a helper thread can end an epoch while the JAX backend still holds
    donated buffers), so training stops within a step or two of the bad batch.
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.bad = None
        self._lock = threading.Lock()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.bad is not None:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        value = float(np.asarray(logs["loss"]))
        if not math.isfinite(value):
            with self._lock:  # helper threads may report batches out of order: keep the first
                if self.bad is None or (self.epoch, int(batch)) < self.bad[:2]:
                    self.bad = (self.epoch, int(batch), value)


def _terms(logs: dict, prefix: str, profile_names, counts_names, heads) -> dict:
    out = {}
    for head, pname, cname in zip(heads, profile_names, counts_names):
        out[f"{head.name}_profile"] = float(logs[f"{prefix}{pname}_nll"])
        out[f"{head.name}_counts"] = float(logs[f"{prefix}{cname}_mse"])
    return out


def _total(terms: dict, heads, lambdas) -> float:
    return float(
        sum(
            h.profile_weight * terms[f"{h.name}_profile"] + lam * terms[f"{h.name}_counts"]
            for h, lam in zip(heads, lambdas)
        )
    )


class TrainingState:
    """Everything about a run besides the weights: epochs done, lambdas, learning rate, early
    stopping and plateau counters, the best epoch's validation terms, and the history.

    :meth:`end_epoch` is the per-epoch bookkeeping (pure Python, no Keras); the checkpoint
    stores :meth:`to_json`.
    """

    def __init__(
        self,
        heads: Sequence[HeadSpec],
        lambdas: Sequence[float],
        learning_rate: float,
        epochs: int,
        early_stopping_patience: int,
        plateau_patience: int,
        min_delta: float = 0.0,
        plateau_min_delta: float = 0.0,
        plateau_stops: bool = False,
        schedule: str = "plateau",
        halved_patience: int = 0,
    ):
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {schedule!r} (one of {', '.join(LR_SCHEDULES)})")
        self.heads = list(heads)
        self.epochs = int(epochs)
        self.early_stopping_patience = int(early_stopping_patience)
        self.plateau_patience = int(plateau_patience)
        self.min_delta = float(min_delta)
        self.plateau_min_delta = float(plateau_min_delta)
        # the plateau ends the run instead of halving the learning rate (profile-first's
        # profile phase with profile-phase-stop-delta)
        self.plateau_stops = bool(plateau_stops)
        # "cosine": the rate follows rate_factor, the plateau neither halves it nor stops the run
        self.schedule = schedule
        # once the plateau has halved the rate: stop after this many epochs without a
        # significant improvement, counted from the first halving (profile-first's profile phase with
        # profile-phase-patience-after-halving; 0: early_stopping_patience alone)
        self.halved_patience = int(halved_patience)
        self.halvings = 0
        self.halved_wait = 0
        self.epochs_done = 0
        self.lambdas = [float(x) for x in lambdas]
        self.learning_rate = float(learning_rate)
        self.best_terms: dict | None = None
        self.best_epoch: int | None = None
        # the last epoch that lowered the validation loss by more than min_delta (relative):
        # early stopping waits for such an epoch; the best weights follow any lower loss
        self.significant_terms: dict | None = None
        self.significant_epoch: int | None = None
        # the validation loss that last lowered the plateau's reference by more than
        # plateau_min_delta (relative): the learning rate halves after plateau_patience epochs
        # without such an epoch (with 0: without a new best)
        self.plateau_terms: dict | None = None
        self.es_wait = 0
        self.lr_wait = 0
        self.stopped = False
        self.stop_reason = ""
        self.initial: dict = {}
        self.history: dict[str, list] = {"epoch": [], "loss": [], "val_loss": []}
        for h in self.heads:
            for key in (f"{h.name}_profile", f"{h.name}_counts"):
                self.history[key] = []
                self.history[f"val_{key}"] = []
            self.history[f"{h.name}_counts_weight"] = []
        self.history["learning_rate"] = []
        self.history["seconds"] = []

    _SAVED = (
        "epochs_done",
        "lambdas",
        "learning_rate",
        "best_terms",
        "best_epoch",
        "significant_terms",
        "significant_epoch",
        "plateau_terms",
        "es_wait",
        "lr_wait",
        "halvings",
        "halved_wait",
        "stopped",
        "stop_reason",
        "initial",
        "history",
    )

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self._SAVED}

    def load_json(self, obj: dict) -> None:
        # absent from checkpoints written before they existed
        later = {"plateau_terms": obj["best_terms"], "halvings": 0, "halved_wait": 0}
        for k in self._SAVED:
            setattr(self, k, obj[k] if k not in later else obj.get(k, later[k]))

    def best_total(self) -> float | None:
        """The best validation loss, re-expressed with the current lambdas."""
        if self.best_terms is None:
            return None
        return _total(self.best_terms, self.heads, self.lambdas)

    def end_epoch(
        self, epoch: int, train_terms: dict, val_terms: dict, seconds: float = 0.0, last_factor: float = 1.0
    ) -> dict:
        """Record epoch ``epoch`` (0-based) and decide what comes next.

        ``*_terms``: raw per-head losses ``<head>_profile`` (multinomial NLL) and
        ``<head>_counts`` (MSE).  The epoch's losses use the lambdas it was trained with; the
        validation loss is compared with the best epoch's terms re-expressed with those same
        lambdas.  Then the plateau and early-stopping counters move, and lambda is updated for
        the next epoch from the validation terms after epoch 0 and the training terms later.
        ``last_factor``: :func:`rate_factor` at the epoch's last step (warm-up, cosine: the
        history records the rate that step used).  Returns ``{"improved",
        "loss", "val_loss", "lambdas" (used), "learning_rate" (used), "notes"}``.
        """
        lambdas = list(self.lambdas)
        learning_rate = self.learning_rate * last_factor
        loss = _total(train_terms, self.heads, lambdas)
        val_loss = _total(val_terms, self.heads, lambdas)
        h = self.history
        h["epoch"].append(epoch + 1)
        h["loss"].append(loss)
        h["val_loss"].append(val_loss)
        for key, v in train_terms.items():
            h[key].append(v)
        for key, v in val_terms.items():
            h[f"val_{key}"].append(v)
        for head, lam in zip(self.heads, lambdas):
            h[f"{head.name}_counts_weight"].append(lam)
        h["learning_rate"].append(learning_rate)
        h["seconds"].append(seconds)

        best = self.best_total()
        improved = best is None or val_loss < best
        reference = None if self.significant_terms is None else _total(self.significant_terms, self.heads, lambdas)
        significant = reference is None or val_loss < reference - self.min_delta * abs(reference)
        plateau = None if self.plateau_terms is None else _total(self.plateau_terms, self.heads, lambdas)
        plateau_gain = plateau is None or val_loss < plateau - self.plateau_min_delta * abs(plateau)
        notes = []
        halved_now = False
        if improved:
            self.best_terms, self.best_epoch = dict(val_terms), epoch + 1
            notes.append("best" if significant else f"best, by < {self.min_delta:g}")
        if plateau_gain or self.schedule == "cosine":
            self.plateau_terms = dict(val_terms)
            self.lr_wait = 0
        else:
            self.lr_wait += 1
            if self.lr_wait >= self.plateau_patience:
                if self.plateau_stops:
                    self.stopped = True
                    self.stop_reason = (
                        f"plateau: no improvement of the validation loss by more than "
                        f"{self.plateau_min_delta:g} of it for {self.lr_wait} epochs (best: epoch {self.best_epoch})"
                    )
                else:
                    self.learning_rate /= 2.0
                    self.lr_wait = 0
                    self.halvings += 1
                    halved_now = True
                    notes.append(f"learning rate -> {self.learning_rate:.3g}")
        by = f" by more than {self.min_delta:g} of it" if self.min_delta else ""
        if significant:
            self.significant_terms, self.significant_epoch = dict(val_terms), epoch + 1
            self.es_wait = 0
        else:
            self.es_wait += 1
            if self.es_wait >= self.early_stopping_patience:
                self.stopped = True
                self.stop_reason = (
                    f"early stopping: no improvement of the validation loss{by} for "
                    f"{self.es_wait} epochs (best: epoch {self.best_epoch})"
                )
        if self.halved_patience and self.halvings and not self.stopped:
            # counted from the first halving (a later one does not restart the count) or the last gain
            self.halved_wait = 0 if significant or (halved_now and self.halvings == 1) else self.halved_wait + 1
            if self.halved_wait >= self.halved_patience:
                self.stopped = True
                self.stop_reason = (
                    f"early stopping at the halved rate: no improvement of the validation loss{by} for "
                    f"{self.halved_wait} epochs after the learning rate was halved (best: epoch {self.best_epoch})"
                )
        source = val_terms if epoch == 0 else train_terms
        for i, head in enumerate(self.heads):
            if head.frac_target is None:
                continue
            p = head.profile_weight * source[f"{head.name}_profile"]
            c = source[f"{head.name}_counts"]
            self.lambdas[i] = update_counts_weight(self.lambdas[i], p, c, head.frac_target, epoch)
        self.epochs_done = epoch + 1
        if self.epochs_done >= self.epochs and not self.stopped:
            self.stopped = True
            self.stop_reason = f"finished all {self.epochs} epochs"
        return {
            "improved": improved,
            "loss": loss,
            "val_loss": val_loss,
            "lambdas": lambdas,
            "learning_rate": learning_rate,
            "notes": notes,
        }


LR_SCHEDULES = ("plateau", "cosine")


def rate_factor(step: int, steps: int, epochs: int, warmup_epochs: float = 0.0, schedule: str = "plateau") -> float:
    """The factor on the state's learning rate at training step ``step`` (1-based, counted from
    the start of the run's ``epochs`` x ``steps`` steps).

    ``learning-rate-warmup-epochs``: a linear rise over the first ``warmup_epochs`` x
    ``steps`` steps (step k at k / that, at least one step), then 1.  ``schedule`` "cosine"
    multiplies it by (1 + cos(pi (step - 1) / (epochs x steps))) / 2: 1 at the first step,
    near 0 at the last; "plateau" by 1 (the plateau halves the state's rate instead)."""
    factor = 1.0
    if warmup_epochs > 0:
        factor = min(1.0, step / max(1, round(warmup_epochs * steps)))
    if schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * (step - 1) / (epochs * steps)))
    return factor


class _Schedule(keras.callbacks.Callback):
    """Sets the optimizer's rate to the state's rate x :func:`rate_factor` (of the trainer's
    settings: epochs, warm-up, schedule) before each step; with "plateau" after the warm-up
    that is the state's rate, which the controller halves.  Counted from the epoch number, so a
    resumed run continues where it was."""

    def __init__(self, trainer: "_Fit", steps: int):
        super().__init__()
        self.trainer = trainer
        self.steps = steps
        self.epoch = 0
        self.rate = None  # the rate this callback last set in this epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.rate = None  # the controller may have set another between epochs

    def on_train_batch_begin(self, batch, logs=None):
        s = self.trainer.settings
        factor = rate_factor(self.epoch * self.steps + batch + 1, self.steps, s.epochs, s.warmup_epochs, s.lr_schedule)
        rate = self.trainer.state.learning_rate * factor
        # under JAX, touching self.model mid-epoch copies the whole training state back to the
        # model and makes the next step read it again (~5 % of an epoch's time on the quality
        # suite when done every step): only when the rate changes - every step of a warm-up or
        # a cosine, but not in a plateau-scheduled run after its warm-up
        if rate != self.rate:
            self.model.optimizer.learning_rate = rate
            self.rate = rate


class _Controller(keras.callbacks.Callback):
    """Per-epoch bookkeeping around :meth:`TrainingState.end_epoch`: best weights, lambda and
    learning-rate assignment, the log line, the checkpoint."""

    def __init__(self, trainer: "_Fit"):
        super().__init__()
        self.trainer = trainer
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.trainer.train_data.set_epoch(epoch)
        self.t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        tr = self.trainer
        if tr.nan_watch.bad is not None:
            self.model.stop_training = True
            return
        seconds = time.monotonic() - self.t0
        st = tr.state
        train_terms = _terms(logs, "", tr.profile_names, tr.counts_names, tr.heads)
        val_terms = _terms(logs, "val_", tr.profile_names, tr.counts_names, tr.heads)
        bad = [
            k
            for k, v in {**train_terms, **{f"val_{k}": v for k, v in val_terms.items()}}.items()
            if not math.isfinite(v)
        ]
        if bad:
            tr.nan_watch.bad = (epoch, None, bad[0])
            self.model.stop_training = True
            return
        # the factor of the epoch's last step (warm-up, cosine; 1 after a plateau warm-up)
        steps, s = len(tr.train_data), tr.settings
        factor = rate_factor((epoch + 1) * steps, steps, s.epochs, s.warmup_epochs, s.lr_schedule)
        out = st.end_epoch(epoch, train_terms, val_terms, seconds, factor)
        if out["improved"]:
            tr.best_weights = [_value(v) for v in tr.model_variables]
        for var, lam in zip(tr.lambda_vars, st.lambdas):
            var.assign(lam)
        self.model.optimizer.learning_rate = st.learning_rate
        logger.info(
            "%s",
            _epoch_line(
                epoch + 1,
                st.epochs,
                seconds,
                out["loss"],
                out["val_loss"],
                train_terms,
                val_terms,
                tr.heads,
                out["lambdas"],
                st.lambdas,
                out["learning_rate"],
                out["notes"],
            ),
        )
        tr.write_checkpoint()
        if st.stopped:
            if not st.stop_reason.startswith("finished"):
                logger.info("%s", st.stop_reason)
            self.model.stop_training = True


def _epoch_line(
    epoch, epochs, seconds, loss, val_loss, train_terms, val_terms, heads, lambdas, new_lambdas, lr, notes
) -> str:
    parts = [f"epoch {epoch}/{epochs} ({seconds:.1f} s): loss {loss:.4g} val {val_loss:.4g}"]
    for h, lam, new in zip(heads, lambdas, new_lambdas):
        lam_txt = f"lambda {lam:.4g}" + (f"->{new:.4g}" if new != lam else "")
        parts.append(
            f"{h.name}: profile {train_terms[f'{h.name}_profile']:.4g} val "
            f"{val_terms[f'{h.name}_profile']:.4g}, counts {train_terms[f'{h.name}_counts']:.4g} val "
            f"{val_terms[f'{h.name}_counts']:.4g}, {lam_txt}"
        )
    parts.append(f"lr {lr:.3g}")
    line = " | ".join(parts)
    if notes:
        line += " [" + "; ".join(notes) + "]"
    return line


# --------------------------------------------------------------------------- fitting


def fingerprint(step: str, config: dict, files: Sequence) -> str:
    """A hash of the config, the backend and the size and mtime of every input file: a
    checkpoint or a finished run is reused only when it matches."""
    items = []
    for path in files:
        st = Path(path).stat()
        items.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {
            "step": step,
            "config": config,
            "files": items,
            "backend": keras.backend.backend(),
            "format": CHECKPOINT_FORMAT,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class _Fit:
    """One call of :func:`fit_model` (holds what the callbacks need)."""

    def __init__(
        self, model, heads, settings, rt, train_data, val_data, lambda_vars, checkpoint_path, fingerprint_value
    ):
        self.model = model
        self.heads = heads
        self.settings = settings
        self.rt = rt
        self.train_data = train_data
        self.val_data = val_data
        self.lambda_vars = lambda_vars
        self.model_variables = _model_variables(model, lambda_vars)
        self.profile_names, self.counts_names = check_outputs(model, heads)
        self.checkpoint_path = Path(checkpoint_path)
        self.fingerprint = fingerprint_value
        self.state: TrainingState | None = None
        self.best_weights: list | None = None
        self.nan_watch = _NanWatch()

    def write_checkpoint(self) -> None:
        arrays = {}
        for i, v in enumerate(self.model_variables):
            arrays[f"w_{i}"] = _value(v)
        opt_vars = list(self.model.optimizer.variables)
        for i, v in enumerate(opt_vars):
            arrays[f"o_{i}"] = _value(v)
        best_is_current = self.state.best_epoch == self.state.epochs_done
        if self.best_weights is not None and not best_is_current:
            for i, w in enumerate(self.best_weights):
                arrays[f"b_{i}"] = w
        meta = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "variables": [v.path for v in self.model_variables],
            "optimizer-variables": [v.path for v in opt_vars],
            "best-is-current": bool(best_is_current),
            "has-best": self.best_weights is not None,
            "state": self.state.to_json(),
        }
        arrays["meta"] = np.array(json.dumps(meta))
        # atomic: on a failed write (a full disk) the previous checkpoint stays, so a rerun resumes
        hint = "the previous checkpoint is kept; a rerun resumes from it" if self.checkpoint_path.is_file() else ""
        with writing(self.checkpoint_path, "checkpoint", hint):
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(self.checkpoint_path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)

    def read_checkpoint(self) -> bool:
        """Restore from the checkpoint if there is one for this run; True if restored."""
        path = self.checkpoint_path
        if not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("fingerprint") != self.fingerprint:
                    logger.warning(
                        "%s was written for a different config or different input files; starting afresh", path
                    )
                    return False
                if meta["variables"] != [v.path for v in self.model_variables]:
                    logger.warning("%s does not match the model's variables; starting afresh", path)
                    return False
                weights = [z[f"w_{i}"] for i in range(len(self.model_variables))]
                with self.rt.scope():
                    if not self.model.optimizer.built:
                        self.model.optimizer.build(self.model.trainable_variables)
                opt_vars = list(self.model.optimizer.variables)
                if _unscoped(meta["optimizer-variables"]) != _unscoped(v.path for v in opt_vars):
                    logger.warning("%s does not match the optimizer's variables; starting afresh", path)
                    return False
                opt_values = [z[f"o_{i}"] for i in range(len(opt_vars))]
                best = None
                if meta["has-best"]:
                    best = (
                        weights if meta["best-is-current"] else [z[f"b_{i}"] for i in range(len(self.model_variables))]
                    )
        except (OSError, KeyError, ValueError) as err:
            logger.warning("cannot read the checkpoint %s (%s); starting afresh", path, err)
            return False
        for v, w in zip(self.model_variables, weights):
            v.assign(w)
        for v, w in zip(opt_vars, opt_values):
            v.assign(w)
        self.state.load_json(meta["state"])
        self.best_weights = [np.array(w) for w in best] if best is not None else None
        for var, lam in zip(self.lambda_vars, self.state.lambdas):
            var.assign(lam)
        self.model.optimizer.learning_rate = self.state.learning_rate
        logger.info("resuming from %s after epoch %d", path, self.state.epochs_done)
        return True


def _unscoped(paths) -> list[str]:
    """Optimizer variable paths without the optimizer's own name (``adam/``, or ``adam_1/`` for
    a second optimizer in the same process, as when a run is resumed by the same program)."""
    return [p.split("/", 1)[-1] for p in paths]


def _verbose() -> int:
    return 1 if sys.stdout.isatty() and sys.stderr.isatty() else 0


def fit_model(
    model,
    heads: Sequence[HeadSpec],
    settings: TrainSettings,
    rt: Runtime,
    train_data,
    val_data,
    *,
    fingerprint_value: str,
    checkpoint_path=None,
    callbacks=(),
    batcher_options=None,
    keep_compiled: bool = False,
) -> dict:
    """Train ``model`` (built inside ``rt.scope()``) and leave it at its best weights.

    ``keep_compiled``: reuse the compiled steps of an earlier :func:`fit_model` on the same
    model with the same profile weights and trainable weights (:func:`restart_compiled`).

    ``train_data`` / ``val_data``: an HDF5 path or a list of paths (concatenated).  The model's
    outputs must be each head's profile logits then each head's log counts.  Returns the
    record of the run: ``history`` (per-epoch terms), ``initial`` (validation terms before
    training), ``best-epoch``, ``stop-reason``, data statistics.

    Resumes from ``checkpoint_path`` (default ``<checkpoint-dir>/checkpoint.npz``) when it
    holds a checkpoint with the same ``fingerprint_value``; writes it after every epoch.
    Raises :class:`BpflowError` on a NaN or infinite loss.
    """
    input_length = model.inputs[0].shape[1]
    output_length = model.outputs[0].shape[1]
    num_tasks = [h.num_tasks for h in heads]
    check_outputs(model, heads)
    orders = [h.revcomp_order for h in heads]
    options = dict(cache_mb=settings.data_cache_mb, workers=settings.data_workers)
    options.update(batcher_options or {})
    train = H5Batcher(
        train_data,
        num_tasks,
        input_length,
        output_length,
        settings.batch_size,
        max_jitter=settings.max_jitter,
        shuffle=True,
        seed=settings.seed,
        reverse_complement=settings.reverse_complement,
        revcomp_orders=orders,
        batch_multiple=rt.num_devices,
        name="train-data",
        **options,
    )
    val = None
    try:
        val = H5Batcher(
            val_data,
            num_tasks,
            input_length,
            output_length,
            settings.batch_size,
            max_jitter=0,
            shuffle=False,
            batch_multiple=rt.num_devices,
            sample_weights=True,
            name="val-data",
            **options,
        )
        logger.info("%s", train.describe())
        logger.info("%s", val.describe())
        t0 = time.monotonic()
        train_stats = train.scan()
        val_stats = val.scan()
        for head, ts, vs in zip(heads, train_stats, val_stats):
            logger.info(
                "head %s: mean counts per window %.4g (train), %.4g (val); windows without counts: "
                "%d of %d (train), %d of %d (val)",
                head.name,
                ts.mean_total,
                vs.mean_total,
                ts.zero_windows,
                ts.num_samples,
                vs.zero_windows,
                vs.num_samples,
            )
        logger.debug("data checked in %.1f s", time.monotonic() - t0)
        lambdas = []
        for head, stats in zip(heads, train_stats):
            if head.counts_weight is not None:
                lambdas.append(head.counts_weight)
                continue
            if stats.mean_total <= 0:
                raise BpflowError(
                    f"train-data: head {head.name!r} has no counts in any window, so "
                    "counts-loss-frac-target cannot set lambda; give counts-loss-weight"
                )
            lambdas.append(initial_counts_weight(stats.mean_total, head.frac_target))
        with rt.scope():
            compile_ = restart_compiled if keep_compiled else compile_model
            lambda_vars = compile_(model, heads, settings.learning_rate, lambdas, settings.jit_compile)
        fit = _Fit(
            model,
            heads,
            settings,
            rt,
            train,
            val,
            lambda_vars,
            checkpoint_path or Path(settings.checkpoint_dir) / "checkpoint.npz",
            fingerprint_value,
        )
        fit.state = TrainingState(
            heads,
            lambdas,
            settings.learning_rate,
            settings.epochs,
            settings.early_stopping_patience,
            settings.plateau_patience,
            settings.min_delta,
            settings.plateau_min_delta,
            settings.plateau_stops,
            settings.lr_schedule,
            settings.halved_patience,
        )
        resumed = fit.read_checkpoint()
        # evaluated on a resumed run too, so that it takes the path of an uninterrupted one:
        # under JAX, a resumed run that skipped it trained to other losses (~1 % apart by the
        # third epoch; tests/test_training.py, kill and resume)
        initial = model.evaluate(val, verbose=0, return_dict=True)
        if not resumed:
            terms = _terms(initial, "", fit.profile_names, fit.counts_names, heads)
            fit.state.initial = {"val_loss": _total(terms, heads, lambdas), **{f"val_{k}": v for k, v in terms.items()}}
            logger.info(
                "before training: val loss %.4g (%s)",
                fit.state.initial["val_loss"],
                ", ".join(f"{h.name} lambda {lam:.4g}" for h, lam in zip(heads, lambdas)),
            )
        st = fit.state
        resumed_after = st.epochs_done if resumed else None
        if not st.stopped and st.epochs_done < settings.epochs:
            train.set_epoch(st.epochs_done)  # Keras may fetch a first batch before on_epoch_begin
            model.fit(
                train,
                validation_data=val,
                epochs=settings.epochs,
                initial_epoch=st.epochs_done,
                callbacks=[
                    fit.nan_watch,
                    _Controller(fit),
                    *(
                        [_Schedule(fit, len(train))]
                        if settings.warmup_epochs > 0 or settings.lr_schedule != "plateau"
                        else []
                    ),
                    *callbacks,
                ],
                verbose=_verbose(),
                shuffle=False,
            )
        if not st.stopped and st.epochs_done >= settings.epochs:
            # resumed at or past this run's budget: a checkpoint of a phase that had more epochs
            # (a counts phase checkpointed before counts-phase-epochs capped it)
            st.stopped, st.stop_reason = True, f"finished all {settings.epochs} epochs"
        if fit.nan_watch.bad is not None:
            epoch, batch, what = fit.nan_watch.bad
            where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
            raise BpflowError(
                f"training stopped: the loss became NaN or infinite in {where} ({what}); "
                "check the data for extreme values or lower learning-rate (the checkpoint "
                "keeps the last good epoch)"
            )
        if fit.best_weights is not None:
            for v, w in zip(fit.model_variables, fit.best_weights):
                v.assign(w)
        record = {
            "initial": st.initial,
            "history": st.history,
            "best-epoch": st.best_epoch,
            "best-val-loss": st.history["val_loss"][st.best_epoch - 1] if st.best_epoch else None,
            "last-significant-epoch": st.significant_epoch,
            "epochs-run": st.epochs_done,
            "resumed-after-epoch": resumed_after,
            "stopped-early": not st.stop_reason.startswith("finished"),
            "stop-reason": st.stop_reason,
            "final-counts-loss-weight": {h.name: lam for h, lam in zip(heads, st.lambdas)},
            # the cosine's last step ran at ~0; the plateau's rate is the state's
            "final-learning-rate": st.history["learning_rate"][-1]
            if st.schedule == "cosine" and st.history["learning_rate"]
            else st.learning_rate,
            "train-samples": train.num_samples,
            "val-samples": val.num_samples,
            "train-counts": {h.name: vars(s) for h, s in zip(heads, train_stats)},
            "val-counts": {h.name: vars(s) for h, s in zip(heads, val_stats)},
        }
        logger.info(
            "best epoch %s (val loss %.4g); %s", st.best_epoch, record["best-val-loss"] or float("nan"), st.stop_reason
        )
        return record
    finally:
        train.close()
        if val is not None:
            val.close()
