"""Saved models (``.keras`` files): loading with bpflow's layers registered, one-line errors.

Keras is imported when a model is loaded, not when this module is.
"""

from __future__ import annotations

from pathlib import Path

from bpflow.utils import BpflowError, first_line


def load_model(path, what: str | None = None):
    """Load a saved ``.keras`` model without compiling it; ``what`` (a config key, say) prefixes
    the one-line error when the file is missing or unreadable."""
    import keras

    import bpflow.layers  # noqa: F401  (registers the custom layers and losses)
    import bpflow.losses  # noqa: F401

    where = f"{what}: " if what else ""
    if not Path(path).is_file():
        raise BpflowError(f"{where}{path}: model file not found")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001  (Keras raises many types for a bad file)
        raise BpflowError(f"{where}{path}: cannot load the model: {first_line(err)}") from None
