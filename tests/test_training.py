"""Training (bpflow.training) against known answers; runs under every Keras backend."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import bpflow  # noqa: F401  (registers custom objects for load_model)
from bpflow import cli
from bpflow.formats.dataset import read_windows
from bpflow.models import soloModel
from bpflow.train import loop
from bpflow.train import steps as training
from bpflow.train.batcher import H5Batcher
from bpflow.train.loop import TrainingState, initial_counts_weight, update_counts_weight
from bpflow.train.settings import HeadSpec, TrainSettings, counts_phase_epochs, weights_config
from bpflow.utils import BpflowError

import train_helpers as th
from data_helpers import stderr_lines

pytestmark = pytest.mark.backend

TESTS = Path(__file__).parent


# --------------------------------------------------------------------------- adaptive lambda


def test_update_counts_weight_hand_computed():
    # epoch 0 and 1 jump to the candidate t*p / ((1-t)*c) ...
    assert update_counts_weight(10, 100, 5, 0.2, epoch=0) == pytest.approx(5.0)  # 0.2*100/(0.8*5)
    assert update_counts_weight(10, 90, 1, 0.25, epoch=1) == pytest.approx(30.0)  # 0.25*90/(0.75*1)
    # ... clamped to 10x either way
    assert update_counts_weight(10, 1000, 0.1, 0.5, epoch=0) == pytest.approx(100.0)  # candidate 10000
    assert update_counts_weight(10, 1, 100, 0.1, epoch=1) == pytest.approx(1.0)  # candidate 0.00111
    # later epochs smooth: 0.3 * candidate + 0.7 * lambda ...
    assert update_counts_weight(10, 100, 5, 0.2, epoch=2) == pytest.approx(8.5)  # 0.3*5 + 7
    assert update_counts_weight(10, 100, 2, 0.2, epoch=5) == pytest.approx(10.75)  # 0.3*12.5 + 7
    # ... clamped to 2x: candidate 1000 -> 307 -> 20
    assert update_counts_weight(10, 1000, 1, 0.5, epoch=3) == pytest.approx(20.0)
    # a perfect counts loss raises lambda as far as allowed, never to inf/NaN
    assert update_counts_weight(4, 50, 0.0, 0.1, epoch=0) == pytest.approx(40.0)
    assert update_counts_weight(4, 50, 0.0, 0.1, epoch=2) == pytest.approx(8.0)
    assert initial_counts_weight(50.0, 0.1) == pytest.approx(185.0)  # 37 * 50 * 0.1


def test_training_state_sequence_hand_computed():
    """Lambda, early stopping and plateau over a hand-made loss sequence."""
    head = HeadSpec("h", 2, profile_weight=2.0, counts_weight=None, frac_target=0.2)
    st = TrainingState([head], [10.0], learning_rate=0.01, epochs=10, early_stopping_patience=3, plateau_patience=2)

    def terms(p, c):
        return {"h_profile": p, "h_counts": c}

    # epoch 0: val terms drive lambda: p = 2*50 = 100, c = 5 -> candidate 0.2*100/(0.8*5) = 5
    out = st.end_epoch(0, terms(60, 8), terms(50, 5))
    assert out["improved"] and out["val_loss"] == pytest.approx(2 * 50 + 10 * 5)
    assert st.lambdas == [pytest.approx(5.0)]
    # epoch 1: training terms p = 2*40 = 80, c = 1 -> candidate 20 (within 10x of 5)
    out = st.end_epoch(1, terms(40, 1), terms(45, 4))
    assert out["val_loss"] == pytest.approx(2 * 45 + 5 * 4) and out["improved"]
    assert st.lambdas == [pytest.approx(20.0)]
    # epoch 2: smoothing: p = 80, c = 2 -> candidate 10 -> 0.3*10 + 0.7*20 = 17
    # validation 2*44 + 20*4.6 = 180 vs best 2*45 + 20*4 = 170 re-expressed with lambda 20
    out = st.end_epoch(2, terms(40, 2), terms(44, 4.6))
    assert not out["improved"] and st.es_wait == 1 and st.best_epoch == 2
    assert st.lambdas == [pytest.approx(17.0)]
    # epoch 3: still no better than 2*45 + 17*4 = 158 -> plateau patience 2 halves the rate
    out = st.end_epoch(3, terms(40, 2), terms(45, 4.1))
    assert not out["improved"] and st.learning_rate == pytest.approx(0.005) and st.lr_wait == 0
    assert out["learning_rate"] == pytest.approx(0.01)  # the rate the epoch was trained with
    # epoch 4: third epoch without improvement -> early stopping
    st.end_epoch(4, terms(40, 2), terms(46, 4))
    assert st.stopped and st.stop_reason.startswith("early stopping") and st.best_epoch == 2
    assert st.history["h_counts_weight"][:3] == pytest.approx([10.0, 5.0, 20.0])
    assert st.history["learning_rate"] == pytest.approx([0.01] * 4 + [0.005])
    # a state survives the JSON round trip of the checkpoint
    copy = TrainingState([head], [1.0], 1.0, 10, 3, 2)
    copy.load_json(json.loads(json.dumps(st.to_json())))
    assert copy.to_json() == st.to_json()


def test_min_delta_early_stopping_hand_computed():
    """Early stopping waits for an epoch that lowers the validation loss by more than
    min_delta of it; the best weights and the learning-rate plateau follow any lower loss."""
    head = HeadSpec("h", 2, profile_weight=1.0, counts_weight=0.0, frac_target=None)
    st = TrainingState(
        [head], [0.0], learning_rate=0.01, epochs=10, early_stopping_patience=3, plateau_patience=2, min_delta=0.01
    )

    def val(p):
        return st.end_epoch(st.epochs_done, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})

    assert val(100.0)["notes"] == ["best"] and st.significant_epoch == 1
    # 99.5 is a new best but not 1 % below 100: the early-stopping counter moves, the plateau's does not
    assert val(99.5)["notes"] == ["best, by < 0.01"]
    assert (st.best_epoch, st.significant_epoch, st.es_wait, st.lr_wait) == (2, 1, 1, 0)
    # 98.9 < 100 - 1: significant (measured from the last significant epoch's 100, not from 99.5)
    val(98.9)
    assert (st.best_epoch, st.significant_epoch, st.es_wait) == (3, 3, 0)
    # three more epochs below 98.9 but above 98.9 - 0.989 = 97.911: a stop at the third, best kept
    for p in (98.5, 98.0, 97.95):
        out = val(p)
    assert st.stopped and st.best_epoch == 6 and st.significant_epoch == 3
    assert st.stop_reason == (
        "early stopping: no improvement of the validation loss by more than 0.01 of it for 3 epochs (best: epoch 6)"
    )
    assert out["improved"] and st.learning_rate == pytest.approx(0.01)  # every epoch a new best: no halving
    # min_delta 0 is the rule of BPReveal and Keras: any lower loss resets early stopping
    st0 = TrainingState([head], [0.0], 0.01, 10, 3, 2)
    for e, p in enumerate((100.0, 99.99, 99.98, 99.97)):
        st0.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})
    assert not st0.stopped and st0.significant_epoch == st0.best_epoch == 4
    # the checkpoint keeps the reference of early stopping ...
    again = TrainingState([head], [0.0], 0.01, 10, 3, 2, 0.01)
    again.load_json(json.loads(json.dumps(st.to_json())))
    assert (again.significant_epoch, again.significant_terms) == (3, {"h_profile": 98.9, "h_counts": 0.0})
    # ... and min-delta is part of what a checkpoint must match (a run with another one starts afresh)
    config = {"settings": {"early-stopping-min-delta": 1e-4, "epochs": 3}, "heads": []}
    other = json.loads(json.dumps(config))
    other["settings"]["early-stopping-min-delta"] = 0.0
    assert loop.fingerprint("bias", weights_config(config), []) != loop.fingerprint("bias", weights_config(other), [])


def test_plateau_min_delta_halves_the_rate_of_a_creeping_loss_hand_computed():
    """With a plateau min-delta the learning rate halves after plateau-patience epochs none of
    which lowered the loss by more than that fraction of the last such loss, new bests or not."""
    head = HeadSpec("h", 2, profile_weight=1.0, counts_weight=0.0, frac_target=None)

    def run(plateau_min_delta, losses):
        st = TrainingState([head], [0.0], 0.01, 20, 10, 2, plateau_min_delta=plateau_min_delta)
        for e, p in enumerate(losses):
            st.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})
        return st

    # every epoch a new best: 99.5 and 99.0 are not more than 1 % below 100, so the rate
    # halves after the second of them; 98.5 is (the new reference); 98.0 and 97.6 are not more
    # than 1 % below 98.5 (97.515): halved again
    losses = (100.0, 99.5, 99.0, 98.5, 98.0, 97.6)
    st = run(0.01, losses)
    assert st.history["learning_rate"] == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.005])
    assert st.learning_rate == pytest.approx(0.0025)
    assert st.best_epoch == 6 and st.plateau_terms == {"h_profile": 98.5, "h_counts": 0.0}
    # 0 (the default) is BPReveal's rule: any new best resets the plateau, so no halving here
    st0 = run(0.0, losses)
    assert st0.learning_rate == pytest.approx(0.01)
    # the checkpoint keeps the plateau's reference; one written before it existed uses the best
    again = TrainingState([head], [0.0], 0.01, 20, 10, 2, plateau_min_delta=0.01)
    again.load_json(json.loads(json.dumps(st.to_json())))
    assert again.plateau_terms == st.plateau_terms
    old = {k: v for k, v in st.to_json().items() if k != "plateau_terms"}
    again.load_json(json.loads(json.dumps(old)))
    assert again.plateau_terms == st.best_terms


def test_a_stopping_plateau_ends_the_run_where_the_rate_would_halve_hand_computed():
    """plateau_stops (profile-first's profile phase with profile-phase-stop-delta): the run
    ends at the epoch whose plateau would halve the learning rate, at the full rate, keeping
    the best epoch; early stopping alone would have gone on."""
    head = HeadSpec("h", 2, profile_weight=1.0, counts_weight=0.0, frac_target=None)
    st = TrainingState([head], [0.0], 0.01, 20, 10, 2, plateau_min_delta=0.01, plateau_stops=True)
    # 99.5 (epoch 2) and 99.0 (epoch 3) are new bests but not 1 % below 100: the plateau's
    # second epoch, so the run ends after epoch 3
    for e, p in enumerate((100.0, 99.5, 99.0, 98.0)):
        if st.stopped:
            break
        st.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})
    assert st.epochs_done == 3 and st.best_epoch == 3
    assert st.learning_rate == pytest.approx(0.01) and st.history["learning_rate"] == pytest.approx([0.01] * 3)
    assert st.stop_reason == (
        "plateau: no improvement of the validation loss by more than 0.01 of it for 2 epochs (best: epoch 3)"
    )


def test_patience_after_halving_ends_the_run_sooner_hand_computed():
    """halved_patience (profile-first's profile phase with profile-phase-patience-after-halving):
    once the plateau has halved the rate, the run ends after that many epochs without a
    significant gain, counted from the halving (not from the last gain before it, which would
    end the run at once), or from a later gain; early stopping alone would have gone on."""
    head = HeadSpec("h", 2, profile_weight=1.0, counts_weight=0.0, frac_target=None)

    def run(halved_patience, losses):
        st = TrainingState([head], [0.0], 0.01, 30, 10, 2, 0.01, halved_patience=halved_patience)
        for e, p in enumerate(losses):
            if st.stopped:
                break
            st.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})
        return st

    # epoch 1 the best; 2 and 3 are not: halved after epoch 3 (the halving's waits start
    # there, although early stopping's started at epoch 2); epoch 4 (95) is a gain at the
    # halved rate and resets them; 5 and 6 are new bests but not 1 % below 95: ended after 6
    losses = (100.0, 101.0, 102.0, 95.0, 94.5, 94.4, 90.0, 80.0)
    st = run(2, losses)
    assert st.epochs_done == 6 and st.best_epoch == 6 and st.significant_epoch == 4
    assert st.history["learning_rate"] == pytest.approx([0.01] * 3 + [0.005] * 3)
    assert st.stop_reason == (
        "early stopping at the halved rate: no improvement of the validation loss by more than 0.01 of it "
        "for 2 epochs after the learning rate was halved (best: epoch 6)"
    )
    # patience 1 after the halving: epoch 4 gains, epoch 5 does not
    assert run(1, losses).epochs_done == 5
    # 0 (off): the run goes on to its gains at epochs 7 and 8
    st0 = run(0, losses)
    assert not st0.stopped and st0.epochs_done == 8 and st0.best_epoch == 8
    # a run never halved is not stopped by it; a checkpoint keeps the counters (an older one: 0)
    assert not run(2, (100.0, 90.0, 80.0, 70.0)).stopped
    mid = run(2, losses[:5])
    again = TrainingState([head], [0.0], 0.01, 30, 10, 2, 0.01, halved_patience=2)
    again.load_json(json.loads(json.dumps(mid.to_json())))
    assert (again.halvings, again.halved_wait) == (1, 1)
    again.end_epoch(5, {"h_profile": 94.4, "h_counts": 0.0}, {"h_profile": 94.4, "h_counts": 0.0})
    assert again.stopped and again.epochs_done == 6
    old = {k: v for k, v in mid.to_json().items() if k not in ("halvings", "halved_wait")}
    again.load_json(json.loads(json.dumps(old)))
    assert (again.halvings, again.halved_wait) == (0, 0)


def test_a_better_epoch_under_a_new_lambda_is_not_mistaken():
    """Lowering lambda lowers the raw total; the re-expressed best must account for it."""
    head = HeadSpec("h", 1, profile_weight=1.0, counts_weight=100.0, frac_target=0.5)
    st = TrainingState([head], [100.0], 0.01, 10, 5, 5)
    st.end_epoch(0, {"h_profile": 10, "h_counts": 1}, {"h_profile": 10, "h_counts": 1})  # val 110
    assert st.lambdas == [pytest.approx(10.0)]  # candidate 10 (0.5*10/(0.5*1))
    # same terms again: the total drops from 110 to 20 only because lambda changed
    out = st.end_epoch(1, {"h_profile": 10, "h_counts": 1}, {"h_profile": 10, "h_counts": 1})
    assert out["val_loss"] == pytest.approx(20.0) and not out["improved"]


# --------------------------------------------------------------------------- the three steps


class LossRecorder(keras.callbacks.Callback):
    """Keras's own running training loss per epoch (computed inside the compiled step)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["loss"]))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """bias -> transformation -> combined, two epochs each, on synthetic data."""
    tmp = tmp_path_factory.mktemp("pipeline")
    bias_in, res_in = th.needed(th.BIAS_ARCH), th.needed(th.RESIDUAL_ARCH)
    files = {
        "bias_train": th.synthetic_h5(tmp / "bias_train.h5", 64, bias_in, seed=1),
        "bias_val": th.synthetic_h5(tmp / "bias_val.h5", 23, bias_in, jitter=0, seed=2),
        "train": th.synthetic_h5(tmp / "train.h5", 64, res_in, seed=1, chunks=8, compression="gzip"),
        "val": th.synthetic_h5(tmp / "val.h5", 16, res_in, jitter=0, seed=2),
    }
    recorders = {}
    solo_cfg = th.solo_config(
        tmp, files["bias_train"], files["bias_val"], heads=[th.head(**{"counts-loss-frac-target": 0.2})]
    )
    recorders["solo"] = LossRecorder()
    solo = training.train_solo(solo_cfg, callbacks=[recorders["solo"]])
    tr_cfg = th.transformation_config(tmp, files["bias_train"], files["bias_val"], tmp / "bias.keras")
    transformation = training.train_transformation(tr_cfg)
    comb_cfg = th.combined_config(
        tmp, files["train"], files["val"], tmp / "transformation.keras", **{"data-workers": 2}
    )
    recorders["combined"] = LossRecorder()
    combined = training.train_combined(comb_cfg, callbacks=[recorders["combined"]])
    return {
        "tmp": tmp,
        "files": files,
        "solo": solo,
        "transformation": transformation,
        "combined": combined,
        "recorders": recorders,
        "configs": {"solo": solo_cfg, "combined": comb_cfg},
    }


def test_pipeline_writes_its_files_and_history(pipeline):
    tmp = pipeline["tmp"]
    for name in ("bias.keras", "transformation.keras", "combined_combined.keras", "combined_residual.keras"):
        assert (tmp / name).is_file()
    for prefix in ("bias", "transformation", "combined"):
        assert (tmp / f"{prefix}.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        record = json.loads((tmp / f"{prefix}.history.json").read_text())
        assert record["completed"] and record["format"] == training.HISTORY_FORMAT
        h = record["history"]
        assert h["epoch"] == [1, 2]
        for key in (
            "loss",
            "val_loss",
            "h0_profile",
            "val_h0_profile",
            "h0_counts",
            "val_h0_counts",
            "h0_counts_weight",
            "learning_rate",
            "seconds",
        ):
            assert len(h[key]) == 2 and all(np.isfinite(h[key])), key
        # the totals are profile-loss-weight x NLL + lambda x MSE of the epoch
        for e in range(2):
            lam = h["h0_counts_weight"][e]
            assert h["val_loss"][e] == pytest.approx(h["val_h0_profile"][e] + lam * h["val_h0_counts"][e])
        assert not (tmp / f"{prefix}.checkpoint").exists()  # removed once finished
    assert not any(tmp.glob(".*tmp*"))  # no temporary files left behind


def test_adaptive_lambda_starts_from_training_counts_and_reaches_the_compiled_step(pipeline):
    solo = pipeline["solo"]
    h = solo["history"]
    # start: 37 x mean total counts of the training windows (central, un-jittered) x target
    with h5py.File(pipeline["files"]["bias_train"]) as f:
        prof = f["head_0"][:, th.JITTER : th.JITTER + th.OUTPUT_LENGTH, :]
    mean_counts = prof.sum(axis=(1, 2)).mean()
    assert h["h0_counts_weight"][0] == pytest.approx(37 * mean_counts * 0.2, rel=1e-6)
    # after epoch 0 lambda follows the validation terms (within the 10x clamp)
    p, c = h["val_h0_profile"][0], h["val_h0_counts"][0]
    expected = update_counts_weight(h["h0_counts_weight"][0], p, c, 0.2, 0)
    assert h["h0_counts_weight"][1] == pytest.approx(expected, rel=1e-6)
    assert h["h0_counts_weight"][1] != pytest.approx(h["h0_counts_weight"][0])
    # Keras's own loss, computed inside the compiled train step, used the new lambda in epoch 2
    # (under JAX a lambda variable the model does not track would be baked in as a constant)
    keras_losses = pipeline["recorders"]["solo"].losses
    assert keras_losses == pytest.approx(h["loss"], rel=1e-4)


def test_training_is_deterministic_given_the_seed_on_the_cpu(pipeline, tmp_path):
    """The pipeline's solo and combined runs again with the same configs: bit-identical
    weights and histories (the CPU default is deterministic, under either backend); the
    combined run reads its batches through two prefetch workers."""
    for name, train, model_file in (
        ("solo", training.train_solo, "bias.keras"),
        ("combined", training.train_combined, "combined_residual.keras"),
    ):
        config = json.loads(json.dumps(pipeline["configs"][name]))
        config["settings"]["output-prefix"] = str(tmp_path / Path(config["settings"]["output-prefix"]).name)
        again = train(config)
        assert again["environment"]["deterministic"] and again["environment"]["device-kind"] == "cpu"
        for key in ("loss", "val_loss", "h0_counts_weight"):
            assert again["history"][key] == pipeline[name]["history"][key], (name, key)
        first = keras.saving.load_model(pipeline["tmp"] / model_file)
        second = keras.saving.load_model(tmp_path / model_file)
        assert len(first.weights) == len(second.weights)
        for a, b in zip(first.weights, second.weights):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=f"{name}: {a.path}")


def test_combined_validation_loss_improves_on_initialisation(pipeline):
    rec = pipeline["combined"]
    assert rec["history"]["val_loss"][-1] < rec["initial"]["val_loss"]
    assert rec["best-epoch"] == int(np.argmin(rec["history"]["val_loss"])) + 1


def _one_hot_batch(n, length, seed=0):
    return np.eye(4, dtype="float32")[np.random.default_rng(seed).integers(0, 4, size=(n, length))]


def test_saved_models_load_cleanly_and_compose(pipeline):
    tmp = pipeline["tmp"]
    load = keras.saving.load_model
    solo = load(tmp / "bias.keras")
    transformation = load(tmp / "transformation.keras")
    combined = load(tmp / "combined_combined.keras")
    residual = load(tmp / "combined_residual.keras")
    for model in (solo, transformation, combined, residual):
        assert getattr(model, "optimizer", None) is None and not model.compiled  # weights and architecture only
        assert not any("counts_mse" in v.path for v in model.weights)
        assert all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())
    # the residual file is the residual inside the combined file
    inner = combined.get_layer("residual")
    assert [v.path for v in inner.weights] == [v.path for v in residual.weights]
    for a, b in zip(inner.weights, residual.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the frozen solo model is unchanged inside the transformation, which is unchanged inside combined
    for a, b in zip(solo.weights, transformation.get_layer("solo").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(transformation.weights, combined.get_layer("transformation").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # combined = bias (on the center-cropped input) + residual: logits add, counts log-add-exp
    res_in, bias_in = th.needed(th.RESIDUAL_ARCH), th.needed(th.BIAS_ARCH)
    x = _one_hot_batch(5, res_in)
    crop = (res_in - bias_in) // 2
    c_prof, c_counts = [np.asarray(o) for o in combined(x)]
    r_prof, r_counts = [np.asarray(o) for o in residual(x)]
    b_prof, b_counts = [np.asarray(o) for o in transformation(x[:, crop : crop + bias_in])]
    np.testing.assert_allclose(c_prof, r_prof + b_prof, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c_counts, np.logaddexp(r_counts, b_counts), rtol=1e-5, atol=1e-5)
    # the transformation of a trained linear spec is no longer the identity of the solo model
    s_prof, _ = [np.asarray(o) for o in solo(x[:, crop : crop + bias_in])]
    assert not np.allclose(s_prof, b_prof)


def test_a_model_saved_during_training_loads_again(pipeline, tmp_path):
    """A checkpointing callback saves the combined model as compiled for training (its ``nll``
    and ``mse`` metrics, the attached lambda variables): the file loads after ``import bpflow``
    and predicts what the model predicted when it was saved."""
    files = pipeline["files"]
    x = th.synthetic_arrays(4, th.needed(th.RESIDUAL_ARCH), th.OUTPUT_LENGTH, seed=5)[0]

    class SaveEachEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.predicted = []

        def on_epoch_end(self, epoch, logs=None):
            self.model.save(tmp_path / f"epoch{epoch}.keras")
            self.predicted.append([np.asarray(o) for o in self.model(x)])

    saver = SaveEachEpoch()
    cfg = th.combined_config(tmp_path, files["train"], files["val"], pipeline["tmp"] / "transformation.keras")
    training.train_combined(cfg, callbacks=[saver])
    assert len(saver.predicted) == 2
    for epoch, expected in enumerate(saver.predicted):
        loaded = keras.saving.load_model(tmp_path / f"epoch{epoch}.keras")
        for got, want in zip(loaded(x), expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(saver.predicted[0][0], saver.predicted[1][0])  # two different epochs


def test_a_finished_run_is_not_redone(pipeline):
    class Fail(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise AssertionError("training ran again")

    path = pipeline["tmp"] / "bias.history.json"
    before = path.stat().st_mtime_ns
    again = training.train_solo(pipeline["configs"]["solo"], callbacks=[Fail()])
    assert again["history"] == pipeline["solo"]["history"]
    assert path.stat().st_mtime_ns == before
    # nor when only how it runs changed (log level, data loading threads and cache, where the
    # checkpoint would go): the fingerprint covers what changes the weights
    config = json.loads(json.dumps(pipeline["configs"]["solo"]))
    config["verbosity"] = "DEBUG"
    config["settings"].update(
        {"data-workers": 1, "data-cache-mb": 64, "checkpoint-dir": str(pipeline["tmp"] / "elsewhere")}
    )
    assert training.train_solo(config, callbacks=[Fail()])["fingerprint"] == pipeline["solo"]["fingerprint"]
    # what changes the weights does count
    config["settings"]["seed"] = config["settings"].get("seed", 1234) + 1
    with pytest.raises(AssertionError, match="training ran again"):
        training.train_solo(config, callbacks=[Fail()])
    assert path.stat().st_mtime_ns == before


# --------------------------------------------------------------------------- resume


class Killed(Exception):
    pass


class KillAt(keras.callbacks.Callback):
    """Simulates a kill: raises in the middle of epoch ``epoch`` (0-based) of the ``fit``-th
    training run it sees (profile-first's counts phase is the second)."""

    def __init__(self, epoch, batch, fit=1):
        super().__init__()
        self.target = (fit, epoch, batch)
        self.fits = 0
        self.epoch = None

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.fits, self.epoch, batch) == self.target:
            raise Killed(f"killed in epoch {self.epoch + 1}")


def test_kill_and_resume_reaches_the_uninterrupted_result(tmp_path, monkeypatch):
    bias_in = th.needed(th.BIAS_ARCH)
    train = th.synthetic_h5(tmp_path / "train.h5", 48, bias_in, seed=3)
    val = th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=4)  # one batch: one compile
    heads = [th.head(**{"counts-loss-frac-target": 0.3})]
    kw = {"epochs": 3, "learning-rate-plateau-patience": 1, "reverse-complement": True, "data-workers": 2}

    calls = []
    original = H5Batcher.__getitem__

    def recording(self, index):
        calls.append((self.name, self.epoch, index))
        return original(self, index)

    monkeypatch.setattr(H5Batcher, "__getitem__", recording)
    full = training.train_solo(th.solo_config(tmp_path, train, val, prefix="full", heads=heads, **kw))
    # every training batch of epoch e came from epoch e's shuffle, jitter and flips
    train_calls = [(e, i) for name, e, i in calls if name == "train-data"]
    assert sorted(set(train_calls)) == [(e, i) for e in range(3) for i in range(3)]

    cfg = th.solo_config(tmp_path, train, val, prefix="resumed", heads=heads, **kw)
    with pytest.raises(Killed):
        training.train_solo(cfg, callbacks=[KillAt(epoch=1, batch=1)])
    checkpoint = tmp_path / "resumed.checkpoint" / "checkpoint.npz"
    assert checkpoint.is_file() and not (tmp_path / "resumed.keras").exists()
    resumed = training.train_solo(cfg)
    assert resumed["resumed-after-epoch"] == 1 and full["resumed-after-epoch"] is None  # really resumed
    assert resumed["history"]["epoch"] == [1, 2, 3]
    for key in ("loss", "val_loss", "h0_counts_weight", "learning_rate", "val_h0_profile", "val_h0_counts"):
        np.testing.assert_allclose(resumed["history"][key], full["history"][key], rtol=1e-6, err_msg=key)
    a = keras.saving.load_model(tmp_path / "full.keras")
    b = keras.saving.load_model(tmp_path / "resumed.keras")
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb), rtol=1e-6, atol=1e-7)
    assert not checkpoint.exists()


# --------------------------------------------------------------------------- counts-schedule


def _schedule_data(tmp_path):
    bias_in = th.needed(th.BIAS_ARCH)
    return (
        th.synthetic_h5(tmp_path / "train.h5", 48, bias_in, seed=5),
        th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=6),
    )


def _profile_first_config(tmp_path, prefix: str, epochs: int, **settings):
    """(training file, solo config) of a profile-first run on :func:`_schedule_data`."""
    train, val = _schedule_data(tmp_path)
    heads = [th.head(**{"counts-loss-frac-target": 0.3})]
    kw = {"counts-schedule": "profile-first", **settings}
    return train, th.solo_config(tmp_path, train, val, prefix=prefix, heads=heads, epochs=epochs, **kw)


def _weights_by_layer(path) -> dict:
    model = keras.saving.load_model(path)
    return {layer.name: [np.asarray(w) for w in layer.weights] for layer in model.layers if layer.weights}


def test_profile_first_counts_layers_keeps_the_profile_only_body(tmp_path):
    """Phase 1 of "profile-first" is a fit with counts weight 0; with counts-phase-trainable
    "counts-layers" on a solo model phase 2 is a ridge regression of the counts Dense alone, so
    phase 1 gets every epoch, every other weight equals that of a plain run with
    counts-loss-weight 0, and the counts layer solves the ridge normal equations (checked
    against numpy's least squares on the stacked system)."""
    train, val = _schedule_data(tmp_path)
    profile_only = training.train_solo(
        th.solo_config(
            tmp_path, train, val, prefix="profile-only", epochs=4, heads=[th.head(**{"counts-loss-weight": 0.0})]
        )
    )
    cfg = th.solo_config(
        tmp_path,
        train,
        val,
        prefix="pf",
        heads=[th.head(**{"counts-loss-frac-target": 0.3})],
        epochs=4,
        **{"counts-schedule": "profile-first", "counts-phase-trainable": "counts-layers", "counts-phase-epochs": 2},
    )
    record = training.train_solo(cfg)
    a, b = _weights_by_layer(tmp_path / "profile-only.keras"), _weights_by_layer(tmp_path / "pf.keras")
    assert a.keys() == b.keys() and "solo_logcounts_h0" in a
    for name in a:
        same = all(np.array_equal(x, y) for x, y in zip(a[name], b[name]))
        assert same == (name != "solo_logcounts_h0"), name
    # the history: all 4 epochs are the profile phase; the counts phase ran no epochs
    hist = record["history"]
    assert hist["phase"] == ["profile"] * 4 and hist["epoch"] == [1, 2, 3, 4]
    np.testing.assert_allclose(hist["val_h0_profile"], profile_only["history"]["val_h0_profile"], rtol=1e-6)
    assert [p["phase"] for p in record["phases"]] == ["profile", "counts"]
    # the counts layer: ridge regression of log(1 + total) on the pooled features
    fit = record["counts-fit"]["heads"]["h0"]
    model = keras.saving.load_model(tmp_path / "pf.keras")
    dense = model.get_layer("solo_logcounts_h0")
    features = keras.Model(model.inputs, dense.input)
    seqs, totals = read_windows([train], model.inputs[0].shape[1], model.outputs[0].shape[1], 1)
    x = np.asarray(features.predict(seqs, verbose=0), dtype=np.float64)
    y = np.log1p(totals[:, 0])
    xc, yc = x - x.mean(axis=0), y - y.mean()
    ridge = fit["ridge"] * np.trace(xc.T @ xc) / xc.shape[1]
    stacked = np.concatenate([xc, np.sqrt(ridge) * np.eye(xc.shape[1])])
    k = np.linalg.lstsq(stacked, np.concatenate([yc, np.zeros(xc.shape[1])]), rcond=None)[0]
    kernel, bias = np.asarray(dense.kernel)[:, 0], float(np.asarray(dense.bias)[0])
    np.testing.assert_allclose(kernel, k, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bias, y.mean() - x.mean(axis=0) @ k, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fit["train-mse-after"], np.mean((x @ kernel + bias - y) ** 2), rtol=1e-3)
    assert fit["train-mse-after"] < fit["train-mse-before"]
    assert record["phases"][1]["trainable"] == ["solo_logcounts_h0"] and record["epochs-run"] == 4
    assert record["stop-reason"] == "finished all 4 epochs"
    assert hist["learning_rate"] == pytest.approx([0.01] * 4)
    assert not (tmp_path / "pf.checkpoint").exists()


def test_profile_first_epochs_bound_both_phases_and_counts_start_at_the_mean(tmp_path):
    """epochs is the budget of the step: the profile phase gets epochs - counts-phase-epochs,
    the counts phase counts-phase-epochs (no more when the profile phase stopped early).  A
    joint run's counts head starts at the training windows' mean log(1 + total); a
    profile-first run's is not centred (its counts layers are fitted by least squares after
    the profile phase, which trains them with weight 0)."""
    from bpflow.formats.dataset import read_windows
    from bpflow.train import recipes

    train, cfg = _profile_first_config(
        tmp_path, "budget", 6, **{"counts-phase-epochs": 1, "learning-rate": 1.0, "early-stopping-patience": 1}
    )
    record = training.train_solo(cfg)
    profile, counts = record["phases"]
    assert profile["epochs-allowed"] == 5 and profile["epochs-run"] < 5  # stopped early (lr 1.0)
    assert counts["epochs-allowed"] == 1 and counts["epochs-run"] == 1
    first = profile["epochs-run"]
    assert record["epochs-run"] == first + 1 < 6
    assert record["stop-reason"] == f"finished the counts phase's 1 epochs ({first} profile, early stopping; 1 counts)"
    assert "counts-init" not in record and record["counts-fit"]["heads"]["h0"]["train-mse-after"] > 0
    # a joint run's counts head starts at the data's mean log(1 + total) (the MSE-optimal constant)
    seqs, totals = read_windows(train, th.needed(th.BIAS_ARCH), th.OUTPUT_LENGTH, 1)
    joint = dict(cfg, settings={**cfg["settings"], "counts-schedule": "joint", "epochs": 1})
    joint["settings"].pop("counts-phase-epochs")
    joint["settings"]["output-prefix"] = str(tmp_path / "budget-joint")
    assert training.train_solo(joint)["counts-init"]["h0"] == pytest.approx(np.mean(np.log1p(totals[:, 0])), rel=1e-6)
    model = soloModel(
        th.needed(th.BIAS_ARCH),
        th.OUTPUT_LENGTH,
        th.BIAS_ARCH["filters"],
        th.BIAS_ARCH["layers"],
        th.BIAS_ARCH["input_filter_width"],
        th.BIAS_ARCH["output_filter_width"],
        [{"head-name": "h0", "num-tasks": 2}],
        "solo",
    )
    heads = [HeadSpec("h0", 2, 1.0, 1.0, None)]
    before = recipes.predict_logcounts(model, seqs, 1)[0]
    target = recipes.center_counts(model, heads, train)["h0"]
    after = recipes.predict_logcounts(model, seqs, 1)[0]
    assert abs(np.mean(before) - target) > 1.0  # Keras's start is far from the data
    assert np.mean(after) == pytest.approx(target, abs=1e-4)
    np.testing.assert_allclose(after - before, np.mean(after - before), atol=1e-5)  # a shift only
    # the default counts phase: a quarter of epochs, at most 15 (so 64 epochs train what 60 do)
    long = dict(cfg, settings={**cfg["settings"], "epochs": 64, "output-prefix": str(tmp_path / "budget-64")})
    long["settings"].pop("counts-phase-epochs")
    profile, counts = training.train_solo(long)["phases"]
    assert profile["epochs-allowed"] == 49 and profile["epochs-run"] < 49
    assert counts["epochs-allowed"] == 15
    # a phase budget the profile phase cannot have
    bad = dict(cfg, settings={**cfg["settings"], "counts-phase-epochs": 6})
    with pytest.raises(BpflowError, match="counts-phase-epochs: 6 leaves the profile phase no epoch"):
        training.train_solo(bad)


def test_the_default_counts_phase_is_a_quarter_of_epochs_from_1_to_15():
    """counts-phase-epochs by default: epochs // 4, at least 1 and at most 15 (the suite's
    recipe: 60 epochs, 15 counts); a given value is kept, above 15 too."""
    assert [counts_phase_epochs({"epochs": e}) for e in (2, 3, 4, 7, 32, 50, 59, 60, 63, 64, 100, 1000)] == [
        1, 1, 1, 1, 8, 12, 14, 15, 15, 15, 15, 15
    ]  # fmt: skip
    assert counts_phase_epochs({"epochs": 100, "counts-phase-epochs": 25}) == 25
    assert counts_phase_epochs({"epochs": 10, "counts-phase-epochs": 2}) == 2


def test_profile_phase_stop_delta_ends_the_profile_phase_at_its_plateau(tmp_path):
    """profile-phase-stop-delta: the profile phase ends at its first plateau (here: epoch 3 of
    its 8, the second after the first without a 90 % gain) at the full learning rate, and the
    counts phase runs its counts-phase-epochs; the stage's stop-reason says so, and the
    quality check does not call a plateau an epoch limit."""
    from bpflow.evaluate.qc import training_qc

    _, cfg = _profile_first_config(
        tmp_path,
        "pstop",
        10,
        **{"counts-phase-epochs": 2, "profile-phase-stop-delta": 0.9, "learning-rate-plateau-patience": 2},
    )
    record = training.train_solo(cfg)
    profile, counts = record["phases"]
    assert profile["epochs-allowed"] == 8 and profile["epochs-run"] == 3
    assert profile["stop-reason"].startswith("plateau: no improvement of the validation loss by more than 0.9")
    assert profile["final-learning-rate"] == pytest.approx(0.01)  # not halved
    assert counts["epochs-allowed"] == 2 and counts["epochs-run"] == 2
    assert record["epochs-run"] == 5 and record["history"]["phase"] == ["profile"] * 3 + ["counts"] * 2
    assert record["stop-reason"] == "finished the counts phase's 2 epochs (3 profile, plateau; 2 counts)"
    # the profile phase's plateau is not an epoch limit: no "still improving" warning for it
    entry = training_qc({"bias": str(tmp_path / "pstop.history.json")})["stages"]["bias"]
    assert not [w for w in entry["warnings"] if "profile phase" in w]
    assert len(entry["checks"]) == 2
    # a closed-form counts phase: the profile phase ends at the same plateau
    cfg["settings"].update({"counts-phase-trainable": "counts-layers", "output-prefix": str(tmp_path / "pstop-cl")})
    cfg["settings"].pop("counts-phase-epochs")
    profile, counts = training.train_solo(cfg)["phases"]
    assert profile["epochs-allowed"] == 10 and profile["epochs-run"] == 3 and counts["epochs-run"] == 0


def test_the_counts_phase_keeps_the_profile_phases_compiled_steps(tmp_path, monkeypatch):
    """Profile-first's counts phase reuses the profile phase's compiled steps, the lambdas and
    the optimizer restarted (loop.restart_compiled): the model compiles once, and the run is the
    run of a fresh compile for the counts phase (the same losses, epoch by epoch, and weights)."""
    compiles = []
    compile_model = loop.compile_model

    def counting(*args, **kwargs):
        compiles.append(args[1][0].counts_weight)
        return compile_model(*args, **kwargs)

    monkeypatch.setattr(loop, "compile_model", counting)
    _, cfg = _profile_first_config(tmp_path, "kept", 5, **{"counts-phase-epochs": 2, "counts-phase-trainable": "all"})
    kept = training.train_solo(cfg)
    assert compiles == [0.0] and kept["epochs-run"] == 5
    # the same run with a fresh compile for the counts phase
    monkeypatch.setattr(loop, "restart_compiled", counting)
    compiles.clear()
    cfg["settings"]["output-prefix"] = str(tmp_path / "fresh")
    fresh = training.train_solo(cfg)
    assert len(compiles) == 2 and compiles[0] == 0.0 and compiles[1] is None  # lambda from the data
    for key in ("loss", "val_loss", "h0_counts", "val_h0_counts", "val_h0_profile", "learning_rate"):
        assert kept["history"][key] == pytest.approx(fresh["history"][key], rel=1e-5), key
    for name, weights in _weights_by_layer(tmp_path / "kept.keras").items():
        for a, b in zip(weights, _weights_by_layer(tmp_path / "fresh.keras")[name]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_patience_after_halving_ends_the_profile_phase_after_its_first_halving(tmp_path):
    """profile-phase-patience-after-halving: with a plateau min-delta of 90 % (plateau patience 1)
    the rate halves after epoch 2 and again after epoch 3; with a min-delta of 90 % no epoch
    gains, so the phase ends after epoch 3, one epoch after the first halving (the second does
    not restart the count), where early stopping (patience 10) would have run all 8; the
    counts phase then runs its epochs, and the stage's stop-reason says so."""
    _, cfg = _profile_first_config(
        tmp_path,
        "halved",
        10,
        **{
            "counts-phase-epochs": 2,
            "profile-phase-patience-after-halving": 1,
            "learning-rate-plateau-patience": 1,
            "learning-rate-plateau-min-delta": 0.9,
            "early-stopping-min-delta": 0.9,
            "early-stopping-patience": 10,
        },
    )
    record = training.train_solo(cfg)
    profile, counts = record["phases"]
    assert profile["epochs-allowed"] == 8 and profile["epochs-run"] == 3
    assert profile["stop-reason"].startswith("early stopping at the halved rate: no improvement")
    assert profile["final-learning-rate"] == pytest.approx(0.0025)
    assert record["history"]["learning_rate"][:3] == pytest.approx([0.01, 0.01, 0.005])
    assert counts["epochs-run"] == 2 and record["epochs-run"] == 5
    assert record["stop-reason"] == (
        "finished the counts phase's 2 epochs (3 profile, early stopping at the halved rate; 2 counts)"
    )


def test_profile_first_all_trains_every_weight_at_the_given_rate(tmp_path):
    train, val = _schedule_data(tmp_path)
    training.train_solo(
        th.solo_config(
            tmp_path, train, val, prefix="profile-only", heads=[th.head(**{"counts-loss-weight": 0.0})], epochs=1
        )
    )
    record = training.train_solo(
        th.solo_config(
            tmp_path,
            train,
            val,
            prefix="pf",
            heads=[th.head(**{"counts-loss-weight": 5.0})],
            epochs=2,
            **{"counts-schedule": "profile-first", "counts-phase-learning-rate": 0.003},
        )
    )
    assert record["history"]["learning_rate"] == pytest.approx([0.01, 0.003])
    assert record["history"]["h0_counts_weight"] == pytest.approx([0.0, 5.0])
    a, b = _weights_by_layer(tmp_path / "profile-only.keras"), _weights_by_layer(tmp_path / "pf.keras")
    for name in a:  # phase 2 moved the body too
        assert not all(np.array_equal(x, y) for x, y in zip(a[name], b[name])), name


class KillInCall(keras.callbacks.Callback):
    """Raises at ``batch`` of ``epoch`` of the ``call``-th model.fit (1-based) it is passed to."""

    def __init__(self, call, epoch, batch):
        super().__init__()
        self.target, self.calls, self.epoch = (call, epoch, batch), 0, None

    def on_train_begin(self, logs=None):
        self.calls += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.calls, self.epoch, batch) == self.target:
            raise Killed("killed")


def test_profile_first_resumes_in_its_second_phase(tmp_path):
    train, val = _schedule_data(tmp_path)
    heads = [th.head(**{"counts-loss-frac-target": 0.3})]
    kw = {"counts-schedule": "profile-first", "reverse-complement": True, "epochs": 4, "counts-phase-epochs": 2}
    full = training.train_solo(th.solo_config(tmp_path, train, val, prefix="full", heads=heads, **kw))
    cfg = th.solo_config(tmp_path, train, val, prefix="resumed", heads=heads, **kw)
    with pytest.raises(Killed):
        training.train_solo(cfg, callbacks=[KillInCall(call=2, epoch=1, batch=1)])
    ckpt = tmp_path / "resumed.checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-counts.npz", "checkpoint-profile.npz"]
    resumed = training.train_solo(cfg)
    for key in ("loss", "val_loss", "h0_counts_weight", "learning_rate"):
        np.testing.assert_allclose(resumed["history"][key], full["history"][key], rtol=1e-6, err_msg=key)
    a, b = _weights_by_layer(tmp_path / "full.keras"), _weights_by_layer(tmp_path / "resumed.keras")
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=name)
    assert not ckpt.exists()


def test_a_counts_phase_resumed_past_its_budget_ends_as_finished(tmp_path, monkeypatch):
    """A counts-phase checkpoint written with a larger budget (before counts-phase-epochs
    capped the phase; its fingerprint is the config's, which does not change) resumes past the
    new budget: no further epoch, the best weights so far, "finished all 1 epochs"."""
    from bpflow.train import recipes

    train, val = _schedule_data(tmp_path)
    heads = [th.head(**{"counts-loss-frac-target": 0.3})]
    kw = {"counts-schedule": "profile-first", "epochs": 5, "counts-phase-epochs": 1, "early-stopping-patience": 5}
    cfg = th.solo_config(tmp_path, train, val, prefix="old", heads=heads, **kw)
    with monkeypatch.context() as m:  # the old budget: 2 profile epochs, then 3 counts epochs
        m.setattr(recipes, "counts_phase_epochs", lambda s: 3)
        with pytest.raises(Killed):
            training.train_solo(cfg, callbacks=[KillInCall(call=2, epoch=2, batch=1)])
    record = training.train_solo(cfg)
    profile, counts = record["phases"]
    assert profile["epochs-run"] == 2 and counts["epochs-allowed"] == 1
    assert counts["epochs-run"] == 2 and counts["stop-reason"] == "finished all 1 epochs"
    assert record["resumed-after-epoch"] == 2 and len(record["history"]["epoch"]) == 4
    assert record["stop-reason"] == "finished the counts phase's 2 epochs (2 profile, finished all 2 epochs; 2 counts)"


class RateAtEachStep(keras.callbacks.Callback):
    """The optimizer's learning rate as each training step starts."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_learning_rate_warmup_ramps_each_phase_and_continues_after_a_resume(tmp_path):
    """learning-rate-warmup-epochs 2 with 3 steps an epoch: step k of a phase runs at k/6 of
    its rate for k <= 6, then at the rate; the counts phase ramps its own rate afresh; a run
    killed in its second epoch resumes the ramp where the epoch number puts it."""
    train, val = _schedule_data(tmp_path)  # 48 training windows, batch 16: 3 steps an epoch
    kw = {
        "counts-schedule": "profile-first",
        "epochs": 4,
        "counts-phase-epochs": 1,
        "counts-phase-learning-rate": 0.003,
        "learning-rate-warmup-epochs": 2,
    }
    rec = RateAtEachStep()
    record = training.train_solo(th.solo_config(tmp_path, train, val, prefix="warm", **kw), callbacks=[rec])
    expected = [0.01 * k / 6 for k in range(1, 7)] + [0.01] * 3 + [0.003 * k / 6 for k in range(1, 4)]
    assert rec.rates == pytest.approx(expected, rel=1e-6)
    assert record["settings"]["learning-rate-warmup-epochs"] == 2
    # each epoch's last step: the warm-up's 3 / 6 and 6 / 6, then the rate; the counts phase's 3 / 6
    assert record["history"]["learning_rate"] == pytest.approx([0.005, 0.01, 0.01, 0.0015])
    cfg = th.solo_config(tmp_path, train, val, prefix="killed", **kw)
    with pytest.raises(Killed):
        training.train_solo(cfg, callbacks=[KillAt(epoch=1, batch=1)])
    rec = RateAtEachStep()
    resumed = training.train_solo(cfg, callbacks=[rec])
    assert rec.rates == pytest.approx(expected[3:], rel=1e-6)  # from epoch 2's first step on
    np.testing.assert_allclose(resumed["history"]["val_loss"], record["history"]["val_loss"], rtol=1e-6)
    # the default: no warm-up for a bias model, 3 epochs for the combined model
    assert training.check_config(th.solo_config(tmp_path, train, val), "bias")[1].warmup_epochs == 0
    (tmp_path / "t.keras").touch()  # checked for existence only
    combined = th.combined_config(tmp_path, train, val, tmp_path / "t.keras")
    assert training.check_config(combined, "combined")[1].warmup_epochs == 3


def test_rate_factor_hand_computed():
    """The warm-up's linear rise and the cosine's fall, at steps computed by hand: 3 steps an
    epoch, 2 epochs (6 steps), a 1-epoch warm-up (3 steps)."""
    cos = [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]  # 1, 0.933, 0.75, 0.5, 0.25, 0.067
    plateau = [loop.rate_factor(k, 3, 2, 1.0) for k in range(1, 7)]
    assert plateau == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    cosine = [loop.rate_factor(k, 3, 2, 1.0, "cosine") for k in range(1, 7)]
    assert cosine == pytest.approx([1 / 3 * cos[0], 2 / 3 * cos[1], cos[2], cos[3], cos[4], cos[5]])
    assert cosine[2:] == pytest.approx([0.75, 0.5, 0.25, 0.5 * (1 - math.cos(math.pi / 6))])
    assert [loop.rate_factor(k, 3, 2, 0.0, "cosine") for k in range(1, 7)] == pytest.approx(cos)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        TrainingState([_plain_head()], [0.0], 0.01, 2, 2, 1, schedule="linear")


def test_counts_phase_warmup_is_a_fifth_of_a_cosine_phase_at_most():
    """The counts phase's warm-up on the cosine: the stage's, capped at a fifth of the phase, so
    every phase length peaks where the workflow's 3-of-15 does - at (1 + cos(pi / 5)) / 2 =
    0.905 of its rate, at the end of the warm-up - where the uncapped 3-epoch warm-up of a
    3-epoch phase peaks near a quarter; a plateau phase keeps the stage's warm-up."""
    from bpflow.train.recipes import counts_phase_warmup

    settings = TrainSettings("x", 60, 0, 5, 64, 0.008, 5, warmup_epochs=3.0)
    assert counts_phase_warmup(settings, 15, "cosine") == 3.0
    assert counts_phase_warmup(settings, 30, "cosine") == 3.0
    assert counts_phase_warmup(settings, 6, "cosine") == pytest.approx(1.2)
    assert counts_phase_warmup(settings, 3, "cosine") == pytest.approx(0.6)
    assert counts_phase_warmup(settings, 3, "plateau") == 3.0
    assert counts_phase_warmup(settings, 12, "cosine") == 2.4  # as the record writes it
    steps = 50

    def peak(epochs, warmup):
        return max(loop.rate_factor(k, steps, epochs, warmup, "cosine") for k in range(1, epochs * steps + 1))

    for epochs in (3, 6, 15):
        assert peak(epochs, counts_phase_warmup(settings, epochs, "cosine")) == pytest.approx(
            0.5 * (1 + math.cos(math.pi / 5)), abs=0.01
        )
    assert peak(3, 3.0) < 0.27  # the uncapped warm-up: max of (t / 3)(1 + cos(pi t / 3)) / 2, t in epochs


def _plain_head():
    return HeadSpec("h", 2, profile_weight=1.0, counts_weight=0.0, frac_target=None)


def test_the_cosine_schedule_ignores_the_plateau():
    """Under "cosine" epochs without a new best neither halve the rate nor count towards the
    plateau; early stopping still ends the run.  The history records the rate of each epoch's
    last step (the state's rate x the factor the controller passes)."""
    st = TrainingState([_plain_head()], [0.0], 0.01, 10, 3, 1, schedule="cosine")
    for e, (p, factor) in enumerate(((100.0, 0.9), (101.0, 0.6), (102.0, 0.3), (103.0, 0.1))):
        st.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0}, last_factor=factor)
    assert st.learning_rate == pytest.approx(0.01) and st.lr_wait == 0
    assert st.history["learning_rate"] == pytest.approx([0.009, 0.006, 0.003, 0.001])
    assert st.stopped and st.stop_reason.startswith("early stopping") and st.best_epoch == 1
    plateau = TrainingState([_plain_head()], [0.0], 0.01, 10, 3, 1)
    for e, p in enumerate((100.0, 101.0, 102.0)):
        plateau.end_epoch(e, {"h_profile": p, "h_counts": 0.0}, {"h_profile": p, "h_counts": 0.0})
    assert plateau.learning_rate == pytest.approx(0.0025)  # halved twice, for contrast


def test_counts_phase_cosine_schedule_sets_each_step_and_resumes(tmp_path):
    """counts-phase-schedule "cosine" with 3 steps an epoch, a 2-epoch counts phase and a
    1-epoch warm-up: the profile phase runs the plain warm-up; the counts phase's warm-up is
    capped at a fifth of its epochs (0.4 epochs: 1 step), so its step k (of 6) runs at 0.003 x
    (1 + cos(pi (k - 1) / 6)) / 2; the history
    holds each counts epoch's last rate; a run killed in the counts phase resumes on the
    curve; the train-combined schema accepts the key and names it when its value is wrong."""
    train, val = _schedule_data(tmp_path)  # 48 training windows, batch 16: 3 steps an epoch
    kw = {
        "counts-schedule": "profile-first",
        "epochs": 4,
        "counts-phase-epochs": 2,
        "counts-phase-learning-rate": 0.003,
        "counts-phase-schedule": "cosine",
        "learning-rate-warmup-epochs": 1,
        "learning-rate-plateau-patience": 1,
        "early-stopping-patience": 5,
    }
    rec = RateAtEachStep()
    record = training.train_solo(th.solo_config(tmp_path, train, val, prefix="cos", **kw), callbacks=[rec])
    warm = [min(1.0, k / 3) for k in range(1, 7)]
    cos = [0.5 * (1 + math.cos(math.pi * (k - 1) / 6)) for k in range(1, 7)]
    expected = [0.01 * w for w in warm] + [0.003 * c for c in cos]
    assert rec.rates == pytest.approx(expected, rel=1e-6)
    assert record["history"]["phase"] == ["profile", "profile", "counts", "counts"]
    assert record["history"]["learning_rate"][2:] == pytest.approx([0.003 * cos[2], 0.003 * cos[5]])
    assert record["phases"][1]["final-learning-rate"] == pytest.approx(0.003 * cos[5])  # the last step's
    assert [(p["schedule"], p["learning-rate-warmup-epochs"]) for p in record["phases"]] == [
        ("plateau", 1.0),
        ("cosine", pytest.approx(0.4)),
    ]
    cfg = th.solo_config(tmp_path, train, val, prefix="cos-killed", **kw)
    with pytest.raises(Killed):
        training.train_solo(cfg, callbacks=[KillAt(epoch=1, batch=1, fit=2)])
    rec = RateAtEachStep()
    resumed = training.train_solo(cfg, callbacks=[rec])
    assert rec.rates == pytest.approx(expected[9:], rel=1e-6)  # the counts phase's second epoch
    np.testing.assert_allclose(resumed["history"]["val_loss"], record["history"]["val_loss"], rtol=1e-6)
    (tmp_path / "t.keras").touch()  # checked for existence only
    combined = th.combined_config(tmp_path, train, val, tmp_path / "t.keras")
    combined["settings"].update({"counts-schedule": "profile-first", "counts-phase-schedule": "cosine"})
    training.check_config(combined, "combined")
    combined["settings"]["counts-phase-schedule"] = "linear"
    with pytest.raises(BpflowError, match="settings/counts-phase-schedule: 'linear' is not one of"):
        training.check_config(combined, "combined")


def test_learning_rate_warmup_reaches_the_weight_update():
    """The ramped rate is the one the training steps use, not only the optimizer variable's
    value (under JAX the fit loop keeps its own copy of the variables within an epoch): plain
    SGD on a linear model, two steps an epoch, a 2-epoch warm-up (rates lr/4, lr/2 in the
    first epoch), against the same steps computed by hand."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    lr = 0.1

    def by_hand(rates):
        w, b = np.full((3, 1), 0.5), np.zeros(1)
        for rate, rows in zip(rates, (slice(0, 2), slice(2, 4))):
            error = x[rows] @ w + b - y[rows]  # MSE over the batch of 2: gradient 2/2 x^T error
            w, b = w - rate * x[rows].T @ error, b - rate * error.sum(axis=0)
        return w

    for warmup, rates in ((0, (lr, lr)), (2, (lr / 4, lr / 2))):
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.5))]
        )
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
        trainer = SimpleNamespace(
            state=SimpleNamespace(learning_rate=lr),
            settings=SimpleNamespace(epochs=1, warmup_epochs=warmup, lr_schedule="plateau"),
        )
        callbacks = [loop._Schedule(trainer, steps=2)] if warmup else []
        model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        np.testing.assert_allclose(model.layers[0].kernel.numpy(), by_hand(rates), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- errors


def _cli(step, config_path, capsys):
    code = cli.main([f"train-{step}", str(config_path)])
    return code, stderr_lines(capsys.readouterr().err)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["settings"].update({"learning-rat": 0.1}), "Additional properties are not allowed"),
        (lambda c: c["settings"].pop("epochs"), "'epochs' is a required property"),
        (lambda c: c["settings"].update({"batch-size": "64"}), "key settings/batch-size: '64' is not of type"),
        (
            lambda c: c["settings"]["architecture"].update({"input-length": 30}),
            "key settings/architecture/input-length: 30 is too short",
        ),
        (lambda c: c["heads"][0].pop("counts-loss-weight"), "key heads/0"),
        (
            lambda c: c["heads"][0].update({"profile-loss-weight": 0, "counts-loss-frac-target": 0.1}),
            "counts-loss-frac-target needs profile-loss-weight > 0",
        ),
        (lambda c: c["heads"].append(dict(c["heads"][0])), "duplicate head-name"),
        (lambda c: c["settings"].update({"counts-schedule": "counts-first"}), "key settings/counts-schedule"),
        (
            lambda c: c["settings"].update({"counts-phase-trainable": "all"}),
            'settings/counts-phase-trainable: only used with counts-schedule "profile-first"',
        ),
        (
            lambda c: c["settings"].update({"counts-phase-schedule": "cosine"}),
            'settings/counts-phase-schedule: only used with counts-schedule "profile-first"',
        ),
    ],
)
def test_bad_configs_fail_with_one_line_before_reading_data(tmp_path, capsys, edit, message):
    bogus = tmp_path / "not_hdf5.h5"
    bogus.write_text("this is not HDF5")  # reading it would fail differently
    config = th.solo_config(tmp_path, bogus, bogus)
    edit(config)
    code, err = _cli("solo", th.write_config(tmp_path / "c.json", config), capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("bpflow train-solo: error: ") and message in err[0]


def test_nan_data_exits_nonzero(tmp_path, capsys):
    bias_in = th.needed(th.BIAS_ARCH)
    seq, prof = th.synthetic_arrays(16, bias_in + 2 * th.JITTER, th.OUTPUT_LENGTH + 2 * th.JITTER, seed=1)
    prof[5, 3, 0] = np.nan
    train = th.write_h5(tmp_path / "train.h5", seq, [prof])
    val = th.synthetic_h5(tmp_path / "val.h5", 8, bias_in, jitter=0)
    code, err = _cli("solo", th.write_config(tmp_path / "c.json", th.solo_config(tmp_path, train, val)), capsys)
    assert code == 2 and len(err) == 1
    assert "train-data" in err[0] and "head_0 has NaN" in err[0] and "sample 5" in err[0]
    assert not (tmp_path / "bias.keras").exists()


def test_an_infinite_loss_stops_training_at_once(tmp_path, capsys):
    bias_in = th.needed(th.BIAS_ARCH)
    seq, prof = th.synthetic_arrays(32, bias_in + 2 * th.JITTER, th.OUTPUT_LENGTH + 2 * th.JITTER, seed=1)
    prof[:] = 1e37  # finite data whose multinomial NLL overflows float32
    train = th.write_h5(tmp_path / "train.h5", seq, [prof])
    val = th.synthetic_h5(tmp_path / "val.h5", 8, bias_in, jitter=0)
    config = th.solo_config(tmp_path, train, val, epochs=3)
    code, err = _cli("solo", th.write_config(tmp_path / "c.json", config), capsys)
    assert code == 2 and len(err) == 1
    assert "NaN or infinite in epoch 1, batch 1" in err[0]
    assert not (tmp_path / "bias.keras").exists() and not (tmp_path / "bias.history.json").exists()
    assert not (tmp_path / "bias.checkpoint" / "checkpoint.npz").exists()


def test_config_and_model_mismatch_is_reported(tmp_path, pipeline):
    files = pipeline["files"]
    cfg = th.transformation_config(tmp_path, files["bias_train"], files["bias_val"], pipeline["tmp"] / "bias.keras")
    cfg["settings"]["input-length"] += 2
    with pytest.raises(BpflowError, match="differ from the solo model"):
        training.train_transformation(cfg)
    cfg = th.transformation_config(tmp_path, files["bias_train"], files["bias_val"], pipeline["tmp"] / "bias.keras")
    cfg["settings"]["profile-architecture"] = cfg["settings"]["counts-architecture"] = {"name": "passthrough"}
    with pytest.raises(BpflowError, match="nothing to train"):
        training.train_transformation(cfg)


# --------------------------------------------------------------------------- devices, precision


def test_mixed_precision_and_no_jitter(tmp_path):
    """Mixed precision trains and saves a float32 model; max-jitter 0 with an adaptive lambda
    (BPReveal's mean counts are 0 there and training goes NaN) gives a finite lambda."""
    bias_in = th.needed(th.BIAS_ARCH)
    train = th.synthetic_h5(tmp_path / "train.h5", 32, bias_in, seed=1)
    val = th.synthetic_h5(tmp_path / "val.h5", 16, bias_in, jitter=0, seed=2)
    heads = [th.head(**{"counts-loss-frac-target": 0.1})]
    rec = training.train_solo(
        th.solo_config(tmp_path, train, val, heads=heads, epochs=1, **{"mixed-precision": True, "max-jitter": 0})
    )
    assert rec["environment"]["precision"] == "mixed_float16"
    assert np.isfinite(rec["history"]["val_loss"]).all()
    mean = rec["train-counts"]["h0"]["mean_total"]
    assert mean > 0 and rec["history"]["h0_counts_weight"][0] == pytest.approx(37 * mean * 0.1)
    assert np.isfinite(rec["final-counts-loss-weight"]["h0"]) and rec["final-counts-loss-weight"]["h0"] > 0
    model = keras.saving.load_model(tmp_path / "bias.keras")
    assert all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


MULTI_DEVICE_SCRIPT = r"""
import json, os, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from bpflow.train import steps as training
config = json.loads(sys.argv[1])
rec = training.train_solo(config)
model = keras.saving.load_model(config["settings"]["output-prefix"] + ".keras")
print("RESULT " + json.dumps({"devices": rec["environment"]["devices"], "history": rec["history"],
                              "weights": [np.asarray(w).tolist() for w in model.weights]}))
"""


def test_data_parallel_training_matches_one_device(pipeline, tmp_path):
    """The pipeline's solo run (one device) again on two virtual CPU devices, in a subprocess
    (TensorFlow's logical devices and JAX's host device count are fixed at start-up)."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        pytest.skip("data parallelism is implemented for tensorflow and jax")
    config = json.loads(json.dumps(pipeline["configs"]["solo"]))
    config["settings"].update({"output-prefix": str(tmp_path / "two"), "multi-device": True})
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    two = json.loads(lines[0][len("RESULT ") :])
    one = pipeline["solo"]
    assert one["environment"]["devices"] == 1 and two["devices"] == 2
    # 23 validation samples: the two-device run pads its last batch (7 -> 8) with weight 0
    for key in ("loss", "val_loss", "h0_counts_weight", "val_h0_counts", "val_h0_profile"):
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=2e-4, err_msg=key)
    single = keras.saving.load_model(pipeline["tmp"] / "bias.keras")
    for a, b in zip(single.weights, two["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)


def test_recompiling_keeps_one_lambda_variable_per_head():
    """A later stage may compile the same model again (e.g. a counts-only fit after a profile
    fit): no stale lambda variable may stay attached to the model."""
    from bpflow.models import soloModel

    heads = [HeadSpec("a", 2, 1.0, 5.0, None), HeadSpec("b", 1, 1.0, 3.0, None)]
    model = soloModel(th.needed(th.BIAS_ARCH), th.OUTPUT_LENGTH, 4, 1, 5, 3, [h.as_model_head() for h in heads], "solo")
    n = len(model.weights)
    first = loop.compile_model(model, heads, 0.01, [5.0, 3.0])
    second = loop.compile_model(model, heads, 0.01, [7.0, 2.0])
    assert len(model.weights) == n + 2
    ids = {id(v) for v in model.weights}
    assert all(id(v) in ids for v in second) and not any(id(v) in ids for v in first)
    assert [float(np.asarray(v)) for v in second] == [7.0, 2.0]
    loop.detach_counts_weights(model)
    assert len(model.weights) == n
