"""The backend-specific part of :mod:`bpflow.interpret.deepshap`: custom gradients and input gradients.

Everything else in :mod:`bpflow.interpret` is written in ``keras.ops``.  TensorFlow or JAX is
imported here lazily, by the Keras backend in use (``keras.backend.backend()``).
"""

from __future__ import annotations

import keras
import numpy as np

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def _backend() -> str:
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise NotImplementedError(
            f"contribution scores need the TensorFlow or JAX Keras backend, not {backend!r}; "
            "set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax"
        )
    return backend


def with_multiplier_gradient(forward, multiplier):
    """An op computing ``forward(t)`` whose gradient is ``upstream * multiplier(t, forward(t))``.

    ``forward`` is elementwise; ``multiplier(t, y)`` returns a tensor shaped like ``t`` (the
    DeepLIFT multipliers replacing the local derivative).
    """
    if _backend() == "tensorflow":
        import tensorflow as tf

        @tf.custom_gradient
        def op(t):
            y = forward(t)

            def grad(upstream):
                return upstream * multiplier(t, y)

            return y, grad

        return op

    import jax

    @jax.custom_vjp
    def op(t):
        return forward(t)

    def op_forward(t):
        y = forward(t)
        return y, (t, y)

    def op_backward(residuals, upstream):
        t, y = residuals
        return (upstream * multiplier(t, y),)

    op.defvjp(op_forward, op_backward)
    return op


def compile_input_gradient(fn):
    """Compile ``x -> (d scalar / d x, aux)`` for ``fn(x) -> (scalar, aux)``; numpy in and out.

    TensorFlow: ``tf.GradientTape`` in a ``tf.function`` compiled with XLA (its non-XLA CPU
    kernels run dilated convolutions through space-to-batch, several times slower); JAX:
    ``jax.jit(jax.grad(fn, has_aux=True))``.
    The model's weights are read as constants.
    """
    if _backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True, jit_compile=True)
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                scalar, aux = fn(x)
            return tape.gradient(scalar, x), aux

        def call(x):
            grad, aux = run(tf.convert_to_tensor(np.asarray(x, dtype=np.float32)))
            return grad.numpy(), aux.numpy()

        return call

    import jax

    run = jax.jit(jax.grad(fn, has_aux=True))

    def call(x):
        grad, aux = run(jax.numpy.asarray(np.asarray(x, dtype=np.float32)))
        return np.asarray(grad), np.asarray(aux)

    return call
