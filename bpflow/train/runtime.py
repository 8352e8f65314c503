"""The run-time environment of a training run: backend, devices, determinism, precision and
data parallelism (:func:`runtime`)."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import keras

from bpflow import __version__, allocator
from bpflow.train.settings import TrainSettings
from bpflow.utils import BpflowError

logger = logging.getLogger("bpflow.train")


@dataclass
class Runtime:
    """Backend, devices and precision of a training run (see :func:`runtime`)."""

    backend: str
    num_devices: int
    device_kind: str
    deterministic: bool
    precision: str
    strategy: object = None

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> dict:
        return {
            "backend": self.backend,
            "devices": self.num_devices,
            "device-kind": self.device_kind,
            "deterministic": self.deterministic,
            "precision": self.precision,
            "bpflow-version": __version__,
            "keras-version": keras.__version__,
            "malloc": allocator.state,
        }


def _tf_devices():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus, tf.config.list_logical_devices("CPU")


@contextlib.contextmanager
def runtime(settings: TrainSettings):
    """Seed, determinism, mixed precision and data parallelism for one run; restores Keras's
    global dtype policy and distribution afterwards."""
    backend = keras.backend.backend()
    strategy = None
    data_parallel = None
    num_devices, device_kind = 1, "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus, cpus = _tf_devices()
        device_kind = "gpu" if gpus else "cpu"
        devices = gpus if gpus else cpus
        if (settings.multi_device is True or (settings.multi_device == "auto" and gpus)) and len(devices) > 1:
            strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
            num_devices = strategy.num_replicas_in_sync
    elif backend == "jax":
        import jax

        devices = jax.devices()
        device_kind = devices[0].platform
        if (settings.multi_device is True or (settings.multi_device == "auto" and device_kind != "cpu")) and len(
            devices
        ) > 1:
            data_parallel = keras.distribution.DataParallel(devices=devices)
            num_devices = len(devices)
    elif settings.multi_device is True:
        logger.warning("multi-device training is supported with the tensorflow and jax backends, not %s", backend)
    if settings.batch_size % num_devices:
        raise BpflowError(
            f"settings/batch-size: {settings.batch_size} is not a multiple of the "
            f"{num_devices} devices used for data-parallel training"
        )
    deterministic = settings.deterministic
    if deterministic == "auto":
        deterministic = device_kind == "cpu"
    precision = "float32"
    if settings.mixed_precision:
        precision = "mixed_bfloat16" if settings.mixed_precision == "bfloat16" else "mixed_float16"

    prev_policy = keras.config.dtype_policy()
    prev_distribution = keras.distribution.distribution() if data_parallel is not None else None
    try:
        if data_parallel is not None:
            keras.distribution.set_distribution(data_parallel)
        keras.utils.set_random_seed(settings.seed)
        if deterministic and backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif (
            deterministic
            and backend == "jax"
            and device_kind == "gpu"
            and "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", "")
        ):
            logger.warning(
                "deterministic: under JAX on a GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true "
                "before starting bpflow for bit-identical reruns"
            )
        keras.config.set_dtype_policy(precision)
        yield Runtime(backend, num_devices, device_kind, bool(deterministic), precision, strategy)
    finally:
        keras.config.set_dtype_policy(prev_policy)
        if data_parallel is not None:
            keras.distribution.set_distribution(prev_distribution)


@contextlib.contextmanager
def float32_policy():
    prev = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(prev)
