"""Exact DeepLIFT / DeepSHAP contribution scores of bpflow's models (rescale rule).

The scores explain one scalar per sequence, the *target* of one head:

- ``"counts"``: the head's log counts output;
- ``"profile"``: BPNet's profile target ``sum_{p,t} (l[p,t] - mean(l)) * w[p,t]`` where ``l`` are
  the head's profile logits (batch, positions, tasks), the mean is over positions and tasks
  jointly and ``w = softmax(l)`` over positions and tasks jointly.  ``w`` is a constant for the
  gradient (stop-gradient) and is always taken at the *input's* logits, also when the target
  is evaluated on a reference, so the target is a linear function of the logits.

Method (DeepLIFT with the rescale rule, averaged over references: DeepSHAP).  Every input is
paired with each of its R references in one batch: the inputs first, then each input's R
references in order; every row goes through the network once (an input once, not once per
reference).
Every nonlinearity ``y = f(x)`` gets the multiplier ``(f(x) - f(x_ref)) / (x - x_ref)`` in place
of its derivative (the derivative at the midpoint ``(x + x_ref) / 2`` where
``|x - x_ref| < 1e-6``): the ReLU of ``Conv1D``/``Dense`` ``activation="relu"``, ``ReLU`` and
``Activation`` layers (relu, sigmoid, softplus, tanh), the sigmoid / relu terms of
:class:`~bpflow.layers.SimpleTransform`, and :class:`~bpflow.layers.LogAddExp`, written as
``b + softplus(a - b)`` with the rescale rule on the softplus (which gives ``a`` the multiplier
``m`` and ``b`` ``1 - m``, symmetrically), and :class:`~bpflow.layers.ProductLogCounts`
(``counts-combination`` "product"), whose overlap term ``log(sum(p_bias * p_residual))`` is held
at the *input's* value, also on its references, as the profile target's weights are (the term
passes no gradient in training either): a product head's counts are explained as the bias's
plus the residual's log counts.  Linear layers (convolutions, dense, add, crop,
pooling, ...) pass gradients unchanged.  These multipliers are symmetric in the pair, so
backpropagating the target from each *reference* row gives, per reference, the DeepLIFT
multipliers ``m[p, c]`` of the target with respect to the input (only the reference rows are
differentiated; the input rows supply the pairs' activations), and the rescale
rule makes them sum exactly to the difference of the target:
``sum_{p,c} m[p,c] (x[p,c] - ref[p,c]) = f(x) - f(ref)``.

Returned quantities (TF-MoDISco's convention, as in ChromBPNet / bpnet-lite):

- hypothetical contributions ``h[p, b] = mean_r sum_c m_r[p,c] (e_b[c] - ref_r[p,c])``, the
  contribution base ``b`` would have at position ``p`` (``e_b`` the one-hot of base ``b``);
- actual contributions ``h * x`` (:func:`contributions`).

Summation to delta: where every position of ``x`` is one-hot (exactly one base),
``sum_{p,b} h[p,b] x[p,b] = f(x) - mean_r f(ref_r)``, up to float32 rounding.  (At a position
with ``sum_b x[p,b] = s``, the actual contributions sum to
``mean_r sum_c m_r[p,c] (x[p,c] - s ref_r[p,c])``: an all-zero (N) position contributes 0,
which matches the delta only where its references are all-zero too.)

The model is never modified or cloned: its functional graph is walked with these
replacements, calling each layer's ``call`` directly so that everything is computed in float32
even for a model built under a mixed-precision policy.  Only :mod:`bpflow.interpret.gradients`
touches TensorFlow or JAX.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Iterator, NamedTuple

import keras
import numpy as np
from keras import ops

from bpflow.interpret import gradients
from bpflow.layers import CenterCrop1D, LogAddExp, ProductLogCounts, SimpleTransform

TARGETS = ("counts", "profile")

#: below this |x - x_ref| a nonlinearity's multiplier falls back to its derivative
RESCALE_EPSILON = 1e-6

DEFAULT_BATCH_SIZE = 8


class DeepShapBatch(NamedTuple):
    """DeepSHAP results of sequences ``start`` to ``start + len(hypothetical)``."""

    start: int
    #: hypothetical contributions (n, L, 4), float32
    hypothetical: np.ndarray
    #: the target on the input, f(x) (n,)
    prediction: np.ndarray
    #: the target averaged over the references, mean_r f(ref_r) (n,), with the input's softmax weights
    reference_prediction: np.ndarray


# --------------------------------------------------------------------------- nonlinearities


def _relu_derivative(x):
    return ops.cast(x > 0, x.dtype)


def _sigmoid_derivative(x):
    s = ops.sigmoid(x)
    return s * (1.0 - s)


def _tanh_derivative(x):
    return 1.0 - ops.square(ops.tanh(x))


_NONLINEARITIES = {
    "relu": (ops.relu, _relu_derivative),
    "sigmoid": (ops.sigmoid, _sigmoid_derivative),
    "softplus": (ops.softplus, ops.sigmoid),
    "tanh": (ops.tanh, _tanh_derivative),
}


def _rescale_multiplier(derivative, references: int):
    """``multiplier(t, y)`` of the rescale rule for a batch laid out as [inputs; references]:
    ``n`` input rows, then each input's ``references`` reference rows in order.  The
    multipliers are those of the reference rows (paired with their input's row); the input rows
    get 0: the gradient is taken at the references (see :func:`_explainer`)."""

    def multiplier(t, y):
        n = ops.shape(t)[0] // (references + 1)
        x, x_ref = ops.repeat(t[:n], references, axis=0), t[n:]
        dx = x - x_ref
        small = ops.abs(dx) < RESCALE_EPSILON
        secant = (ops.repeat(y[:n], references, axis=0) - y[n:]) / ops.where(small, ops.ones_like(dx), dx)
        m = ops.where(small, derivative(0.5 * (x + x_ref)), secant)
        return ops.concatenate([ops.zeros_like(t[:n]), m], axis=0)

    return multiplier


#: references per input in the batch being traced (set by :func:`_explainer` while tracing)
_REFERENCES: contextvars.ContextVar[int] = contextvars.ContextVar("deepshap_references")


@functools.lru_cache(maxsize=None)
def _deeplift_op(name: str, backend: str, references: int):
    forward, derivative = _NONLINEARITIES[name]
    return gradients.with_multiplier_gradient(forward, _rescale_multiplier(derivative, references))


def _nonlinearity(name: str, x):
    """``name`` applied to ``x`` with the rescale rule as its gradient."""
    return _deeplift_op(name, keras.backend.backend(), _REFERENCES.get())(x)


def _activation(function, x, where: str):
    name = getattr(function, "__name__", None)
    if name == "linear":
        return x
    if name in _NONLINEARITIES:
        return _nonlinearity(name, x)
    raise NotImplementedError(
        f"{where}: activation {name or function!r} has no DeepLIFT rule here; supported: linear, "
        + ", ".join(_NONLINEARITIES)
    )


# --------------------------------------------------------------------------- layers


def _f32(value):
    return ops.cast(value, "float32")


def _conv(layer, x):
    inputs, padding = x, layer.padding
    if padding == "causal":  # Conv1D only
        inputs, padding = ops.pad(x, layer._compute_causal_padding()), "valid"
    out = ops.conv(
        inputs,
        _f32(layer.kernel),
        strides=list(layer.strides),
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    if layer.use_bias:
        if layer.data_format == "channels_last":
            out = out + _f32(layer.bias)
        else:
            out = out + ops.reshape(_f32(layer.bias), (1, layer.filters) + (1,) * layer.rank)
    return _activation(layer.activation, out, layer.name)


def _dense(layer, x):
    out = ops.matmul(x, _f32(layer.kernel))
    if layer.bias is not None:
        out = out + _f32(layer.bias)
    return _activation(layer.activation, out, layer.name)


def _relu_layer(layer, x):
    if layer.max_value is not None or layer.negative_slope or layer.threshold:
        raise NotImplementedError(
            f"{layer.name}: only a plain ReLU layer (no max_value, slope, threshold) is supported"
        )
    return _nonlinearity("relu", x)


def _log_add_exp(layer, inputs):
    a, b = inputs
    return b + _nonlinearity("softplus", a - b)


def _held_at_inputs(value):
    """``value`` of each input row, also on its reference rows, as a constant (no gradient)."""
    references = _REFERENCES.get()
    n = ops.shape(value)[0] // (references + 1)
    return ops.stop_gradient(ops.concatenate([value[:n], ops.repeat(value[:n], references, axis=0)], axis=0))


def _product_log_counts(layer, inputs):
    bias_logits, residual_logits, bias_lc, residual_lc = inputs
    return bias_lc + residual_lc + _held_at_inputs(layer.overlap(bias_logits, residual_logits))


def _simple_transform(layer, x):
    total = None
    for term in layer._terms:
        if term[0] == "linear":
            _, slope, offset = term
            value = _f32(slope) * x + _f32(offset)
        else:
            kind, scale, gain, shift, bias = term
            value = _f32(scale) * _nonlinearity(kind, _f32(gain) * x + _f32(shift)) + _f32(bias)
        total = value if total is None else total + value
    return total


#: layers whose ``call`` is linear (affine) at inference; they run unchanged
_LINEAR_LAYERS = (
    CenterCrop1D,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Identity,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Permute,
    keras.layers.Cropping1D,
    keras.layers.ZeroPadding1D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.AveragePooling1D,
)
_INFERENCE_LAYERS = (keras.layers.Dropout, keras.layers.BatchNormalization)  # affine with training=False


def _operation(op):
    """The DeepLIFT replacement of one node's operation, called like the operation."""
    if isinstance(op, keras.Sequential):
        op = op._functional
    if hasattr(op, "_run_through_graph") and hasattr(op, "_nodes_by_depth"):  # a nested functional model
        return lambda inputs, *args, **kwargs: _run_graph(op, inputs)
    if isinstance(op, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return functools.partial(_conv, op)
    if isinstance(op, keras.layers.Dense):
        return functools.partial(_dense, op)
    if isinstance(op, keras.layers.ReLU):
        return functools.partial(_relu_layer, op)
    if isinstance(op, keras.layers.Activation):
        return lambda x: _activation(op.activation, x, op.name)
    if isinstance(op, LogAddExp):
        return functools.partial(_log_add_exp, op)
    if isinstance(op, ProductLogCounts):
        return functools.partial(_product_log_counts, op)
    if isinstance(op, SimpleTransform):
        return functools.partial(_simple_transform, op)
    if isinstance(op, _LINEAR_LAYERS):
        return op.call
    if isinstance(op, _INFERENCE_LAYERS):
        return lambda *args, **kwargs: op.call(*args, **{**kwargs, "training": False})
    raise NotImplementedError(
        f"{getattr(op, 'name', op)} ({type(op).__name__}) has no DeepLIFT rule here; contribution "
        "scores support convolutions, dense layers, relu/sigmoid/softplus/tanh activations, bpflow's "
        "layers and linear layers (add, crop, pooling, reshape, ...)"
    )


def _run_graph(model, inputs):
    return model._run_through_graph(inputs, operation_fn=_operation)


# --------------------------------------------------------------------------- targets


def _check_model(model, target: str, head: int) -> int:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    if len(model.inputs) != 1:
        raise ValueError(f"{model.name}: contribution scores need a model with one input, it has {len(model.inputs)}")
    outputs = model.outputs
    if len(outputs) % 2 or not outputs:
        raise ValueError(f"{model.name}: expected per head a profile and a counts output, got {len(outputs)} outputs")
    heads = len(outputs) // 2
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < heads:
        raise ValueError(f"{model.name}: head must be an index from 0 to {heads - 1}, got {head!r}")
    return heads


def _target(outputs, target: str, head: int, heads: int):
    """Per row of the [inputs; references] batch, the target (softmax weights from the inputs)."""
    if target == "counts":
        counts = outputs[heads + head]
        return ops.reshape(counts, (ops.shape(counts)[0], -1))[:, 0]
    logits = outputs[head]
    flat = ops.reshape(logits, (ops.shape(logits)[0], -1))
    weights = _held_at_inputs(ops.softmax(flat, axis=-1))
    centred = flat - ops.mean(flat, axis=-1, keepdims=True)
    return ops.sum(centred * weights, axis=-1)


def _explainer(model, target: str, head: int, heads: int, references: int):
    """``batch -> (gradient, targets)`` for a batch laid out as [inputs; references].

    The rescale rule's multipliers are symmetric in the input and its reference, so the
    multipliers of the target with respect to the input, against reference ``r``, are its
    gradient at reference row ``r`` in the rescaled graph: each input goes through the network
    once, not once per reference, and only the reference rows are differentiated."""

    def fn(batch):
        token = _REFERENCES.set(references)
        try:
            values = _target(_run_graph(model, _f32(batch)), target, head, heads)
        finally:
            _REFERENCES.reset(token)
        n = ops.shape(values)[0] // (references + 1)
        return ops.sum(values[n:]), values

    return gradients.compile_input_gradient(fn)


# --------------------------------------------------------------------------- public API


def iter_deepshap(
    model,
    sequences,
    references,
    target: str,
    head: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[DeepShapBatch]:
    """DeepSHAP of ``model``'s ``target`` of ``head``, streamed in batches of ``batch_size`` sequences.

    ``sequences``: one-hot (N, L, 4), anything sliceable (a numpy array, a memmap, an HDF5
    dataset), L the model's input length.  ``references``: (N, R, L, 4) sliceable the same way,
    or a callable ``references(batch, start) -> (n, R, L, 4)`` given the batch's one-hot
    (n, L, 4) and the index of its first sequence (e.g. dinucleotide shuffles made on the fly).
    One pass evaluates ``batch_size * (R + 1)`` rows.  Memory does not grow with N.  See the module
    docstring for the method and the summation-to-delta property.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    heads = _check_model(model, target, head)
    explain = None
    length = model.inputs[0].shape[1]
    total = len(sequences)
    if not callable(references) and len(references) != total:
        raise ValueError(f"{len(sequences)} sequences but references for {len(references)}")
    size = min(int(batch_size), total)
    n_refs = None
    for start in range(0, total, size):
        x = np.asarray(sequences[start : start + size], dtype=np.float32)
        n = len(x)
        if x.shape[1:] != (length, 4):
            raise ValueError(f"sequences must be one-hot of shape (N, {length}, 4), got {(total, *x.shape[1:])}")
        refs = references(x, start) if callable(references) else references[start : start + size]
        refs = np.asarray(refs, dtype=np.float32)
        if refs.ndim != 4 or refs.shape[0] != n or refs.shape[2:] != (length, 4) or refs.shape[1] < 1:
            raise ValueError(f"references for {n} sequences must be of shape ({n}, R, {length}, 4), got {refs.shape}")
        if n_refs is None:
            n_refs = refs.shape[1]
        elif refs.shape[1] != n_refs:
            raise ValueError(f"every sequence needs the same number of references ({n_refs}), got {refs.shape[1]}")
        if n < size:  # pad the last batch to the compiled shape
            x = np.concatenate([x, np.zeros((size - n, length, 4), np.float32)])
            refs = np.concatenate([refs, np.zeros((size - n, n_refs, length, 4), np.float32)])
        if explain is None:
            explain = _explainer(model, target, head, heads, n_refs)
        grads, values = explain(np.concatenate([x, refs.reshape(size * n_refs, length, 4)]))
        m = grads[size:].reshape(size, n_refs, length, 4)
        hypothetical = (m - np.sum(m * refs, axis=-1, keepdims=True)).mean(axis=1)
        yield DeepShapBatch(
            start=start,
            hypothetical=hypothetical[:n].astype(np.float32),
            prediction=values[:n],
            reference_prediction=values[size:].reshape(size, n_refs)[:n].mean(axis=1),
        )


def deepshap(
    model, sequences, references, target: str, head: int = 0, batch_size: int = DEFAULT_BATCH_SIZE
) -> DeepShapBatch:
    """All of :func:`iter_deepshap` in one :class:`DeepShapBatch` (``start`` 0)."""
    parts = list(iter_deepshap(model, sequences, references, target, head=head, batch_size=batch_size))
    if not parts:
        empty = np.zeros((0,), np.float32)
        return DeepShapBatch(0, np.zeros((0, model.inputs[0].shape[1], 4), np.float32), empty, empty)
    return DeepShapBatch(
        0, *(np.concatenate([getattr(p, field) for p in parts]) for field in DeepShapBatch._fields[1:])
    )


def hypothetical_contributions(
    model, sequences, references, target: str, head: int = 0, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Hypothetical contributions (N, L, 4), float32, of ``target`` ("counts" or "profile") of ``head``.

    ``h[i, p, b] = mean_r sum_c m_r[p, c] (e_b[c] - ref_r[p, c])`` with ``m_r`` the DeepLIFT
    (rescale) multipliers of the target with respect to the input against reference ``r``: the
    contribution base ``b`` would have at position ``p``; TF-MoDISco's ``hypothetical_contribs``.
    The actual contributions are ``h * sequences`` (:func:`contributions`), and for one-hot
    sequences they sum, per sequence, to ``f(x) - mean_r f(ref_r)`` (summation to delta).
    Arguments as for :func:`iter_deepshap`.
    """
    return deepshap(model, sequences, references, target, head=head, batch_size=batch_size).hypothetical


def contributions(
    model, sequences, references, target: str, head: int = 0, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Actual contributions (N, L, 4): :func:`hypothetical_contributions` times the one-hot ``sequences``."""
    hypothetical = hypothetical_contributions(model, sequences, references, target, head=head, batch_size=batch_size)
    return hypothetical * np.asarray(sequences, dtype=np.float32)
