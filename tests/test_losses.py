"""Losses against scipy and hand-computed values (run under every Keras backend)."""

import keras
import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import multinomial

import bpflow  # noqa: F401
from bpflow.losses import CountsMSE, MultinomialNLL, multinomial_nll, squared_error

pytestmark = pytest.mark.backend


def test_multinomial_nll_matches_scipy_logpmf():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(5, 7, 2)).astype("float32")  # batch 5, 7 positions, 2 tasks
    counts[1] = 0  # an empty window: the NLL is 0 whatever the logits
    logits = rng.normal(size=(5, 7, 2)).astype("float32")
    got = np.asarray(multinomial_nll(counts, logits))
    for i in range(5):
        flat_logits = logits[i].reshape(-1).astype("float64")
        p = np.exp(flat_logits - np.logaddexp.reduce(flat_logits))
        y = counts[i].reshape(-1)
        n = y.sum()
        # bpflow leaves out the multinomial coefficient log n! - sum log y!
        coefficient = gammaln(n + 1) - gammaln(y + 1).sum()
        expected = -(multinomial.logpmf(y, n, p) - coefficient) if n > 0 else 0.0
        assert got[i] == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_multinomial_nll_is_joint_over_tasks():
    """Moving all counts of a head to one task changes the loss as a joint softmax predicts."""
    logits = np.zeros((1, 2, 2), dtype="float32")  # 4 equally likely cells
    counts = np.array([[[3, 0], [0, 0]]], dtype="float32")
    assert float(np.asarray(multinomial_nll(counts, logits))[0]) == pytest.approx(3 * np.log(4), rel=1e-6)


def test_loss_objects_reduce_over_batch():
    counts = np.array([[[1.0], [0.0]], [[0.0], [2.0]]], dtype="float32")
    logits = np.array([[[0.0], [0.0]], [[np.log(3.0)], [0.0]]], dtype="float32")
    # sample 0: -log(1/2); sample 1: -2 log(1/4)
    expected = (np.log(2) + 2 * np.log(4)) / 2
    assert float(MultinomialNLL()(counts, logits)) == pytest.approx(expected, rel=1e-6)
    mse = CountsMSE(weight=3.0)
    assert float(mse(np.array([[1.0], [2.0]]), np.array([[0.0], [4.0]]))) == pytest.approx(3.0 * (1 + 4) / 2)
    # two tasks: the per-sample error is the mean over tasks, then weight x the batch mean
    y_true = np.array([[1.0, 3.0], [0.0, 2.0]], dtype="float32")
    y_pred = np.array([[0.0, 1.0], [0.0, 5.0]], dtype="float32")
    np.testing.assert_allclose(np.asarray(squared_error(y_true, y_pred)), [(1 + 4) / 2, (0 + 9) / 2])
    assert float(mse(y_true, y_pred)) == pytest.approx(3.0 * (2.5 + 4.5) / 2)


def test_counts_weight_can_change_between_epochs_during_fit():
    """The weight is a variable: assigning it mid-fit changes the loss (model tracks it)."""
    x = np.ones((4, 1), dtype="float32")
    y = np.full((4, 1), 3.0, dtype="float32")
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inputs)
    model = keras.Model(inputs, outputs)
    loss = CountsMSE(weight=1.0)
    model.counts_loss_weight = loss.weight  # tracked by the model, so JAX sees the variable
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)

    class TenTimes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss.weight.assign(loss.weight * 10.0)

    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[TenTimes()])
    np.testing.assert_allclose(history.history["loss"], [9.0, 90.0, 900.0], rtol=1e-6)


def test_losses_serialize_with_their_settings():
    for loss in (MultinomialNLL(), CountsMSE(weight=2.5)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(restored) is type(loss)
    assert float(np.asarray(restored.weight)) == 2.5
