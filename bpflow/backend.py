"""Which Keras backend a step that runs a model uses (``--backend``), chosen before Keras is
imported: Keras reads ``KERAS_BACKEND`` once, when it is first imported.

``auto`` (the default) keeps a ``KERAS_BACKEND`` the user set; otherwise it takes JAX on a
machine without a visible NVIDIA GPU (on the CPU, JAX trains BPNet-shaped models about twice as
fast as TensorFlow: benchmarks/README.md, "vs_bpreveal" and "train_throughput") and TensorFlow
where a GPU is visible (the cluster environment, envs/bpflow.yaml, installs TensorFlow with
CUDA); each falls back to the other where only one is installed.  This module imports neither.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import sys

from bpflow.utils import BpflowError

BACKENDS = ("auto", "tensorflow", "jax")
# the steps that import Keras (and so take --backend)
MODEL_STEPS = frozenset(
    {
        "train-bias",
        "train-transformation",
        "train-combined",
        "qc-bias",
        "qc-combined",
        "predict",
        "footprints",
        "contributions",
    }
)


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def nvidia_gpu_visible(environ=None) -> bool:
    """True where an NVIDIA GPU device node exists and ``CUDA_VISIBLE_DEVICES`` does not hide
    every GPU (empty or -1)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_backend(requested: str = "auto", environ=None, gpu: bool | None = None) -> tuple[str, str]:
    """(backend, why) for ``--backend requested``; ``gpu`` overrides the GPU probe (tests)."""
    environ = os.environ if environ is None else environ
    if requested not in BACKENDS:
        raise BpflowError(f"--backend: {requested!r} is not one of {', '.join(BACKENDS)}")
    if requested != "auto":
        if not installed(requested):
            raise BpflowError(f"--backend {requested}: the {requested} package is not installed")
        return requested, "--backend"
    env = environ.get("KERAS_BACKEND", "").strip()
    if env:
        return env, "KERAS_BACKEND"
    gpu = nvidia_gpu_visible(environ) if gpu is None else gpu
    preferred = ("tensorflow", "jax") if gpu else ("jax", "tensorflow")
    for backend in preferred:
        if installed(backend):
            where = "an NVIDIA GPU is visible" if gpu else "no GPU is visible"
            return backend, f"auto: {where}"
    raise BpflowError("no Keras backend is installed: pip install jax (CPU) or tensorflow")


@contextlib.contextmanager
def without_tensorflow():
    """While Keras runs on another backend and TensorFlow is not imported yet, Keras is told
    that TensorFlow is not installed: otherwise it imports it wherever it is installed (to
    seed it for tf.data, to recognise its shapes when saving a model), which cost the suite's
    combined stage under JAX 0.4 GB of its 1.4 GB peak memory and seconds of start-up.  Restored on
    exit; a no-op under TensorFlow, once TensorFlow is imported, or where Keras keeps its
    lazy module elsewhere.  Imports Keras."""
    import keras

    lazy = None
    if keras.backend.backend() != "tensorflow" and "tensorflow" not in sys.modules:
        try:
            from keras.src.utils import module_utils

            lazy = module_utils.tensorflow if hasattr(module_utils.tensorflow, "_available") else None
        except ImportError:
            lazy = None
    if lazy is None:
        yield
        return
    saved, lazy._available = lazy._available, False
    try:
        yield
    finally:
        lazy._available = saved
