"""The Keras backend of the steps that run a model (bpflow.backend, `--backend`)."""

import os
import subprocess
import sys

import pytest

from bpflow import backend
from bpflow.backend import choose_backend, nvidia_gpu_visible
from bpflow.cli import COMMANDS
from bpflow.utils import BpflowError


def test_auto_prefers_jax_on_the_cpu_and_tensorflow_on_a_gpu(monkeypatch):
    monkeypatch.setattr(backend, "installed", lambda name: True)
    assert choose_backend("auto", environ={}, gpu=False) == ("jax", "auto: no GPU is visible")
    assert choose_backend("auto", environ={}, gpu=True) == ("tensorflow", "auto: an NVIDIA GPU is visible")
    # a KERAS_BACKEND the user set wins; an empty one is unset
    assert choose_backend("auto", environ={"KERAS_BACKEND": "tensorflow"}, gpu=False) == (
        "tensorflow",
        "KERAS_BACKEND",
    )
    assert choose_backend("auto", environ={"KERAS_BACKEND": " "}, gpu=False)[0] == "jax"
    # an explicit --backend wins over KERAS_BACKEND
    assert choose_backend("tensorflow", environ={"KERAS_BACKEND": "jax"}) == ("tensorflow", "--backend")


def test_auto_falls_back_to_the_installed_backend(monkeypatch):
    monkeypatch.setattr(backend, "installed", lambda name: name == "tensorflow")
    assert choose_backend("auto", environ={}, gpu=False)[0] == "tensorflow"
    monkeypatch.setattr(backend, "installed", lambda name: name == "jax")
    assert choose_backend("auto", environ={}, gpu=True)[0] == "jax"
    with pytest.raises(BpflowError, match=r"^--backend tensorflow: the tensorflow package is not installed$"):
        choose_backend("tensorflow", environ={})
    monkeypatch.setattr(backend, "installed", lambda name: False)
    with pytest.raises(BpflowError, match="no Keras backend is installed"):
        choose_backend("auto", environ={}, gpu=False)
    with pytest.raises(BpflowError, match=r"--backend: 'torch' is not one of auto, tensorflow, jax"):
        choose_backend("torch", environ={})


def test_cuda_visible_devices_can_hide_the_gpus(monkeypatch):
    monkeypatch.setattr(backend.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert nvidia_gpu_visible({}) and nvidia_gpu_visible({"CUDA_VISIBLE_DEVICES": "0"})
    assert not nvidia_gpu_visible({"CUDA_VISIBLE_DEVICES": ""})
    assert not nvidia_gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"})
    monkeypatch.setattr(backend.glob, "glob", lambda pattern: [])
    assert not nvidia_gpu_visible({})


def test_every_step_either_takes_a_backend_or_imports_no_keras():
    """Each step (but length-calc, pure arithmetic) is a model step (takes --backend) or one of the
    steps tests/test_steps.py checks to import no Keras - never both, never neither."""
    from test_steps import MODEL_FREE_STEPS

    assert backend.MODEL_STEPS.isdisjoint(MODEL_FREE_STEPS)
    assert backend.MODEL_STEPS | set(MODEL_FREE_STEPS) | {"length-calc"} == set(COMMANDS)


def _backend_of_a_step(args, env_backend=None):
    """The backend a model step's process ends up with, from the CLI's choice (subprocess: a
    process imports Keras once)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, whatever the machine has
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    code = (
        "import sys\nfrom bpflow import cli\n"
        f"cli._set_backend(cli._option({args!r}, 'backend'))\n"
        "import keras\nprint(keras.backend.backend())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()[-1]


@pytest.mark.skipif(not (backend.installed("jax") and backend.installed("tensorflow")), reason="needs both backends")
def test_the_cli_sets_the_backend_before_keras_is_imported():
    assert _backend_of_a_step(["cfg.json"]) == "jax"  # auto, no GPU
    assert _backend_of_a_step(["cfg.json", "--backend", "tensorflow"]) == "tensorflow"
    assert _backend_of_a_step(["cfg.json", "--backend=tensorflow"], env_backend="jax") == "tensorflow"
    assert _backend_of_a_step(["cfg.json"], env_backend="tensorflow") == "tensorflow"


def test_an_explicit_backend_must_match_an_imported_keras():
    import keras

    from bpflow import cli

    current = keras.backend.backend()
    cli._set_backend(current)  # agrees: nothing to do
    cli._set_backend("auto")
    other = "jax" if current != "jax" else "tensorflow"
    with pytest.raises(BpflowError, match=f"--backend {other}: Keras is already imported with the {current} backend"):
        cli._set_backend(other)
