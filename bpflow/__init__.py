"""bpflow: BPNet-style, bias-factorized models of base-resolution genomics data.

Importing the package registers bpflow's custom Keras layers and losses, so a saved
``.keras`` file loads with ``keras.saving.load_model`` after ``import bpflow``.
"""

__version__ = "0.1.0"

import os as _os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bpflow import layers as _layers  # noqa: F401,E402  (registers serializable layers)
from bpflow import losses as _losses  # noqa: F401,E402  (registers serializable losses)
