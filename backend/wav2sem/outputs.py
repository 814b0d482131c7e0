"""Writing results so that a failure never leaves a half-written or wrong file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import BAD_REQUEST, OUTPUT_UNWRITABLE, Wav2SemError


def check_output_path(path: str | Path) -> Path:
    """Fail early (before any work) on an output path that cannot be written."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise Wav2SemError(BAD_REQUEST, f"Output {path.name} must end in .npy.")
    if path.is_dir():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"Output {path} is a folder; give a file name ending in .npy.")
    if not path.parent.is_dir():
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"The folder for the output, {path.parent}, does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise Wav2SemError(OUTPUT_UNWRITABLE, f"The folder {path.parent} is not writable.")
    return path


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save into a temporary file beside `path`, then rename over it (atomic on POSIX)."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
