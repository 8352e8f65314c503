"""Saved models (``.keras`` files): loading with bpflow's layers registered, one-line errors.

Keras is imported when a model is loaded, not when this module is.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from bpflow.utils import BpflowError, first_line

# what Keras 3 loads besides its own .keras archives (legacy HDF5 models)
LEGACY_SUFFIXES = (".h5", ".hdf5")


def check_model_file(path, what: str | None = None) -> None:
    """A one-line error, before Keras is involved, unless ``path`` looks like a saved model:
    an existing ``.keras`` file that is a zip archive holding ``config.json`` (Keras 3's
    format; a truncated or zeroed file is not), or a legacy ``.h5`` / ``.hdf5`` model."""
    where = f"{what}: " if what else ""
    path = Path(path)
    if not path.is_file():
        raise BpflowError(f"{where}{path}: model file not found")
    if path.suffix.lower() in LEGACY_SUFFIXES:
        return
    if path.suffix.lower() != ".keras":
        raise BpflowError(f"{where}{path}: not a .keras model file (bpflow saves and reads Keras 3 .keras models)")
    if path.stat().st_size == 0:
        raise BpflowError(f"{where}{path}: the model file is empty")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise BpflowError(
            f"{where}{path}: not a readable .keras model file ({first_line(err)}; truncated or not a Keras 3 model?)"
        ) from None
    if "config.json" not in names:
        raise BpflowError(f"{where}{path}: not a .keras model file (the archive has no config.json)")


def load_model(path, what: str | None = None):
    """Load a saved ``.keras`` model without compiling it; ``what`` (a config key, say) prefixes
    the one-line error when the file is missing or unreadable."""
    check_model_file(path, what)
    import keras

    import bpflow.layers  # noqa: F401  (registers the custom layers and losses)
    import bpflow.losses  # noqa: F401

    where = f"{what}: " if what else ""
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001  (Keras raises many types for a bad file)
        raise BpflowError(f"{where}{path}: cannot load the model: {first_line(err)}") from None
