"""Load reference-repository pickles (e.g. FaceFormer's templates.pkl) without running code.

Unpickling can execute arbitrary code, so only numpy arrays, numpy scalars/dtypes and
builtin containers are admitted; anything else raises `pickle.UnpicklingError`.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy.core.numeric", "_frombuffer"),   # protocol-5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # python-2 pickles store array bytes through codecs.encode
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only numpy arrays and builtin containers "
            "are allowed in this pickle"
        )


def safe_load(path_or_bytes: str | Path | bytes):
    """Unpickle a file (or bytes) admitting only numpy arrays and builtin containers."""
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        data = Path(path_or_bytes).read_bytes()
    # latin1 lets python-2 pickles of numpy arrays load, as the reference repos' do.
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
