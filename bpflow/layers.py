"""Custom Keras layers of bpflow's models, registered for ``.keras`` serialization.

Backend-agnostic: only ``keras.ops`` and ``keras.layers``.
"""

from __future__ import annotations

import keras
from keras import ops

from bpflow.lengths import crop_offset

PACKAGE = "bpflow"

TRANSFORMATION_TYPES = ("linear", "sigmoid", "relu")


@keras.saving.register_keras_serializable(package=PACKAGE)
class CenterCrop1D(keras.layers.Layer):
    """Crop axis 1 of (batch, length, channels) to ``target_length``, keeping the center.

    The length difference must be even, so the crop is the same on both sides.
    """

    def __init__(self, target_length: int, **kwargs):
        super().__init__(**kwargs)
        self.target_length = int(target_length)

    def _crop(self, length: int) -> int:
        return crop_offset(length, self.target_length, f"{self.name}: the input")

    def build(self, input_shape):
        if input_shape[1] is not None:
            self._crop(input_shape[1])

    def call(self, inputs):
        crop = self._crop(inputs.shape[1])
        return inputs[:, crop : crop + self.target_length, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.target_length, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "target_length": self.target_length}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SimpleTransform(keras.layers.Layer):
    """Elementwise transformation with scalar parameters, summed over ``types``.

    - linear:  slope * x + offset                       (starts at slope 1, offset 0)
    - sigmoid: scale * sigmoid(gain * x + shift) + bias
    - relu:    scale * relu(gain * x + shift) + bias

    With a linear term present the non-linear terms start at scale 0 and bias 0, so an untrained
    transformation is the identity; alone, they start at scale 1, gain 1 (relu then starts as
    relu(x), sigmoid as sigmoid(x)).
    """

    def __init__(self, types, **kwargs):
        super().__init__(**kwargs)
        types = [types] if isinstance(types, str) else list(types)
        check_transformation_types(types)
        self.types = types

    def build(self, input_shape):
        has_linear = "linear" in self.types
        self._terms = []
        for i, kind in enumerate(self.types):
            if kind == "linear":
                slope = self.add_weight(shape=(), initializer="ones", name=f"slope_{i}")
                offset = self.add_weight(shape=(), initializer="zeros", name=f"offset_{i}")
                self._terms.append((kind, slope, offset))
            else:
                scale = self.add_weight(
                    shape=(), initializer="zeros" if has_linear else "ones", name=f"{kind}_scale_{i}"
                )
                gain = self.add_weight(shape=(), initializer="ones", name=f"{kind}_gain_{i}")
                shift = self.add_weight(shape=(), initializer="zeros", name=f"{kind}_shift_{i}")
                bias = self.add_weight(shape=(), initializer="zeros", name=f"{kind}_bias_{i}")
                self._terms.append((kind, scale, gain, shift, bias))

    def call(self, inputs):
        total = None
        for term in self._terms:
            if term[0] == "linear":
                _, slope, offset = term
                value = slope * inputs + offset
            else:
                kind, scale, gain, shift, bias = term
                act = ops.sigmoid if kind == "sigmoid" else ops.relu
                value = scale * act(gain * inputs + shift) + bias
            total = value if total is None else total + value
        return total

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "types": list(self.types)}


def check_transformation_types(types) -> None:
    if not types:
        raise ValueError(f"a simple transformation needs at least one type from {list(TRANSFORMATION_TYPES)}")
    for kind in types:
        if kind not in TRANSFORMATION_TYPES:
            raise ValueError(f"unknown transformation type {kind!r}; allowed types: {', '.join(TRANSFORMATION_TYPES)}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogAddExp(keras.layers.Layer):
    """log(exp(a) + exp(b)) computed stably as max(a, b) + log1p(exp(-|a - b|))."""

    def call(self, inputs):
        a, b = inputs
        return ops.maximum(a, b) + ops.log1p(ops.exp(-ops.abs(a - b)))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ProductLogCounts(keras.layers.Layer):
    """A combined head's log counts when the expected track is the bias track times the
    residual's track read as a fold over the bias, position by position
    (``counts-combination`` "product").

    Inputs ``[bias_logits, residual_logits, bias_logcounts, residual_logcounts]`` (profile
    logits (batch, length, tasks), log counts (batch, 1)); with p = softmax over positions x
    tasks jointly, the output is

        bias_logcounts + residual_logcounts + log(sum(p_bias * p_residual))

    the log of sum_i bias_i * fold_i, with the bias track bias_i = exp(bias_logcounts) *
    p_bias_i and the residual's track fold_i = exp(residual_logcounts) * p_residual_i: the total
    of the track bias_i * fold_i, whose profile is the combined profile softmax(bias + residual
    logits).  A residual that adds nothing has fold 1 everywhere: log counts log(N) over N
    positions x tasks, and a flat profile.
    """

    @staticmethod
    def overlap(bias_logits, residual_logits):
        """The overlap term log(sum(p_bias * p_residual)), (batch, 1).  The counts loss sets the
        totals, not the profiles' shapes: the term passes no gradient to the profile logits
        (otherwise the counts could pull the residual's profile towards where the bias is high)."""
        n = bias_logits.shape[1] * bias_logits.shape[2]
        b = ops.stop_gradient(ops.reshape(bias_logits, (-1, n)))
        r = ops.stop_gradient(ops.reshape(residual_logits, (-1, n)))
        joint = ops.logsumexp(b + r, axis=1) - ops.logsumexp(b, axis=1) - ops.logsumexp(r, axis=1)
        return ops.expand_dims(joint, 1)

    def call(self, inputs):
        bias_logits, residual_logits, bias_lc, residual_lc = inputs
        return bias_lc + residual_lc + self.overlap(bias_logits, residual_logits)

    def compute_output_shape(self, input_shape):
        return input_shape[2]


from bpflow import losses as _losses  # noqa: E402,F401  (registers the losses with the layers)
