"""bpflow: BPNet-style, bias-factorized models of base-resolution genomics data.

Importing the package registers bpflow's custom Keras layers and losses, so a saved
``.keras`` file loads with ``keras.saving.load_model`` after ``import bpflow``.
"""

__version__ = "0.1.0"

from bpflow import layers as _layers  # noqa: F401,E402  (registers serializable layers)
from bpflow import losses as _losses  # noqa: F401,E402  (registers serializable losses)
