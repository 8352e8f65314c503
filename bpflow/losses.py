"""Losses of BPNet-style models, registered for ``.keras`` serialization.

- :class:`MultinomialNLL`: negative log-likelihood of observed counts under the multinomial
  whose probabilities are the softmax of a head's logits taken jointly over all positions and
  tasks.  It leaves out the multinomial coefficient ``log n! - sum log y!`` (it does not
  depend on the model, so gradients are unchanged); add it back, e.g. with
  ``scipy.special.gammaln``, to compare with ``scipy.stats.multinomial.logpmf``.
- :class:`CountsMSE`: ``weight * (target - predicted log counts)**2`` where ``weight`` is a
  non-trainable Keras variable that training may change between epochs (adaptive lambda).

Both return one value per sample; Keras averages over the batch.  The functions
:func:`multinomial_nll` and :func:`squared_error` (training's ``nll`` and ``mse`` metrics) are
registered too, so a model saved while compiled for training (a checkpointing callback) loads.
"""

from __future__ import annotations

import keras
from keras import ops

from bpflow.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
def multinomial_nll(y_true, logits):
    """Per-sample multinomial NLL (without the coefficient) of counts ``y_true`` (batch, L, T)."""
    logits = ops.convert_to_tensor(logits)
    y_true = ops.cast(y_true, logits.dtype)
    axes = tuple(range(1, len(logits.shape)))
    log_probs = logits - ops.logsumexp(logits, axis=axes, keepdims=True)
    return -ops.sum(y_true * log_probs, axis=axes)


@keras.saving.register_keras_serializable(package=PACKAGE)
def squared_error(y_true, y_pred):
    """Per-sample mean squared error of log counts ``y_true`` (batch, T) (the ``mse`` metric)."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultinomialNLL(keras.losses.Loss):
    """Profile loss: multinomial NLL, softmax joint over positions x tasks (see module doc)."""

    def __init__(self, name="multinomial_nll", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return multinomial_nll(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CountsMSE(keras.losses.Loss):
    """Counts loss: ``weight`` x squared error of log counts, ``weight`` a Keras variable.

    Change the weight with ``loss.weight.assign(value)``.  Under JAX the compiled train step
    reads the variable only if the model tracks it: training attaches it to the model (see
    :func:`bpflow.train.loop.compile_model`).
    """

    def __init__(self, weight=1.0, name="counts_mse", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.weight = keras.Variable(float(weight), trainable=False, dtype="float32", name=f"{name}_weight")

    def call(self, y_true, y_pred):
        error = squared_error(y_true, y_pred)
        return ops.cast(self.weight, error.dtype) * error

    def get_config(self):
        return {"weight": float(ops.convert_to_numpy(self.weight)), "name": self.name, "reduction": self.reduction}
