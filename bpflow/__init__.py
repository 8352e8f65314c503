"""bpflow: BPNet-style, bias-factorized models of base-resolution genomics data.

Importing the package registers bpflow's custom Keras layers and losses, so a saved
``.keras`` file loads with ``keras.saving.load_model`` after ``import bpflow``.  It does so
without importing Keras itself: the registration runs when Keras is imported (at once when
it already is), so steps that never run a model (data preparation, metrics) start fast and
stay small.
"""

__version__ = "0.1.0"

import importlib.abc as _abc
import importlib.util as _util
import os as _os
import sys as _sys

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _register_keras_objects() -> None:
    # bpflow.layers registers the layers and, through its last line, the losses.  Already in
    # sys.modules means registered, or being imported (this import of Keras is its own).
    if "bpflow.layers" not in _sys.modules:
        import bpflow.layers  # noqa: F401


class _AfterKerasImport(_abc.MetaPathFinder):
    """Finds nothing itself: when ``keras`` is imported, wraps its loader so that bpflow's
    layers and losses are registered right after Keras has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        _sys.meta_path.remove(self)
        spec = _util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register_keras_objects()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in _sys.modules:
    _register_keras_objects()
elif not any(isinstance(f, _AfterKerasImport) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _AfterKerasImport())
