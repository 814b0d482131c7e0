"""Reading a safetensors file into fresh, aligned tensors (for `bundle.load_weights`).

Written here rather than taken from the safetensors library, whose loader hands out views of
a memory-mapped file at unaligned addresses: those pages count as a second copy of the
weights while the file is read, and vectorised kernels take other paths on unaligned data
(outputs would differ in the last bits from a normally built network). The library is still
used where the data must be byte-swapped (big-endian machines)."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from .errors import MODEL_INVALID, Wav2SemError, reason

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path, check=None, dtypes: dict | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (8-byte little-endian header length, JSON header of
    {name: {dtype, shape, data_offsets}}, then the data), each read with one readinto into a
    fresh tensor (aligned, owning its memory; no memory map). `check(shapes)`, if given, sees
    {name: object with .shape} before any data is read (it may raise). `dtypes`: cast each
    tensor to dtypes[name] (only the names listed there are read). MODEL_INVALID when the file
    cannot be read or is not a safetensors file."""
    if sys.byteorder != "little":        # the data is little-endian: let the library swap it
        return _read_safetensors_swapped(path, check, dtypes)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError("its header runs past the end of the file")
            header = json.loads(f.read(length).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
            header.pop("__metadata__", None)
            entries = {}
            for key, entry in header.items():
                dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
                shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if dtype is not None else (None, None)
                if dtype is None or not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
                    raise ValueError(f"its entry for {key!r} is not a tensor description")
                entries[key] = (dtype, tuple(int(n) for n in shape), int(offsets[0]), int(offsets[1]))
            if check is not None:
                check({key: SimpleNamespace(shape=e[1]) for key, e in entries.items()})
            start = 8 + length
            state = {}
            for key in (dtypes if dtypes is not None else entries):
                dtype, shape, begin, end = entries[key]
                nbytes = math.prod(shape) * dtype.itemsize
                if min(shape, default=0) < 0 or begin < 0 or end - begin != nbytes or start + end > size:
                    raise ValueError(f"the data of {key!r} does not fit its shape {shape} or the file")
                tensor = torch.empty(shape, dtype=dtype)     # checked first: a damaged shape allocates nothing
                if nbytes:
                    f.seek(start + begin)
                    if f.readinto(memoryview(tensor.reshape(-1).view(torch.uint8).numpy())) != nbytes:
                        raise ValueError(f"the data of {key!r} is cut short")
                if dtypes is not None and dtypes[key] != dtype:
                    tensor = tensor.to(dtypes[key])
                state[key] = tensor
            return state
    except Wav2SemError:
        raise
    except Exception as exc:  # OSError, JSON/Unicode errors, bad numbers
        raise Wav2SemError(MODEL_INVALID, f"Cannot read {path} ({reason(exc)}); "
                                          "the file is damaged, so rebuild or copy the bundle again.") from exc


def _read_safetensors_swapped(path: Path, check, dtypes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise Wav2SemError(MODEL_INVALID, f"Cannot read {path} ({reason(exc)}); "
                                          "the file is damaged, so rebuild or copy the bundle again.") from exc
    if check is not None:
        check(state)
    return {key: state[key].to(dtypes[key] if dtypes is not None else state[key].dtype, copy=True)
            for key in (dtypes if dtypes is not None else state)}
