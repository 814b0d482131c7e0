"""Load reference-repository pickles (e.g. FaceFormer's templates.pkl) without running code.

Unpickling can execute arbitrary code, so only numpy arrays, numpy scalars/dtypes and
builtin containers are admitted; anything else raises `pickle.UnpicklingError`. So does an
array header asking for more bytes than the whole pickle holds (a few bytes can ask numpy
for terabytes).
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np

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


_ARRAY_CONSTRUCTORS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.size = len(data)

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_CONSTRUCTORS:
            return self._bounded(super().find_class(module, name))
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only numpy arrays and builtin containers "
            "are allowed in this pickle"
        )


    def _bounded(self, reconstruct):
        """numpy's _reconstruct(subtype, shape, dtype), refusing a shape larger than the pickle."""
        def checked(subtype, shape, dtype):
            try:
                size = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
            except (TypeError, ValueError, OverflowError) as exc:
                raise pickle.UnpicklingError(f"an array header that is not a shape and type ({exc})") from None
            if size > self.size:
                raise pickle.UnpicklingError(f"an array header asks for {size} bytes in a pickle of {self.size} bytes")
            return reconstruct(subtype, shape, dtype)
        return checked


def safe_load(path_or_bytes: str | Path | bytes):
    """Unpickle a file (or bytes) admitting only numpy arrays and builtin containers."""
    if isinstance(path_or_bytes, bytes):
        data = path_or_bytes
    else:
        data = Path(path_or_bytes).read_bytes()
    # latin1 lets python-2 pickles of numpy arrays load, as the reference repos' do.
    return _RestrictedUnpickler(data).load()
