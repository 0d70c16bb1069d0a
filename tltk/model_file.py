"""Opening a saved Keras model file, the one way every tltk entry point does: in safe mode."""

from __future__ import annotations

import pathlib
import zipfile

import keras

from tltk.backbones.hub_module import trust_hub_handles
from tltk.lora import revive

# The first bytes of each kind of file: a .keras zip archive, a legacy HDF5 model, a TFLite
# flatbuffer (its identifier at bytes 4-8).
_SIGNATURES = {".keras": b"PK\x03\x04", ".h5": b"\x89HDF\r\n\x1a\n"}
_TFLITE = b"TFL3"


def load_model(path, *, trusted_hub_handles=(), compile=True):
    """Loads a `.keras` (or legacy `.h5`) model file in Keras' safe mode, after checking it.

    Safe mode runs no code from the file: no `Lambda` layer, and no TF Hub module (`HubLayer`)
    or `TFSMLayer`, whose SavedModel graph would run on load. A model on a TF Hub backbone that
    you trust loads with its handle in `trusted_hub_handles`. A TFLite, corrupt or truncated file
    gets an error naming it and saying what it is instead of a Keras traceback. LoRA adapters,
    which Keras merges into the kernels on save and loads at zero, get a new `A` factor (see
    `tltk.lora`), so they train again; the predictions are unchanged.

    Args:
        path: str or Path. The model file, ending in `.keras` or `.h5`.
        trusted_hub_handles: str or list of str. TF Hub handles or SavedModel folders whose
            `HubLayer`s may load (see `tltk.trust_hub_handles`). Defaults to `()`.
        compile: bool. Whether to restore the optimizer, loss and metrics. Defaults to `True`.

    Returns:
        The `keras.Model`.

    Example:

    ```python
    model = tltk.load_model("runs/pets/model.keras")
    hub_model = tltk.load_model("runs/hub/model.keras", trusted_hub_handles=["modules/mobilenet"])
    ```
    """
    path = pathlib.Path(path)
    _check_file(path)
    with trust_hub_handles(trusted_hub_handles):
        model = keras.models.load_model(path, compile=compile, safe_mode=True)
    return revive(model, alpha=getattr(model, "lora_alpha", None))


def _check_file(path):
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder, not a Keras model file (.keras or .h5). Load a SavedModel or a "
            "tltk export folder with tltk.load_exported."
        )
    if not path.is_file():
        raise ValueError(f"Model file not found: {path}. Pass an existing .keras file.")
    with path.open("rb") as file:
        head = file.read(8)
    if head[4:8] == _TFLITE:
        raise ValueError(
            f"{path} is a TFLite file, not a Keras model. Name it with the .tflite suffix and "
            "open it with tltk.load_exported (or `tltk predict` / `tltk evaluate`)."
        )
    signature = _SIGNATURES.get(path.suffix)
    if signature is None:
        raise ValueError(
            "A Keras model file must end in .keras (or .h5, the legacy format). "
            f"Received: path={str(path)!r}"
        )
    if not head.startswith(signature) or (path.suffix == ".keras" and not _archive(path)):
        raise ValueError(
            f"{path} is not a readable Keras {path.suffix} model: the file is corrupt, cut "
            "short, or another kind of file. Save the model again with model.save(path)."
        )


def _archive(path):
    """Whether `path` is a whole zip archive holding a Keras model's `config.json`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
