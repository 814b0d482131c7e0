"""Read a CTranslate2 `model.bin` into numpy arrays, without ctranslate2 installed.

Layout (binary versions 2-6; see ctranslate2's `ModelSpec._serialize` and the C++ loader
`src/models/model.cc`), all integers little-endian:
  u32 binary_version; string spec_name; u32 spec_revision (version >= 2)
  u32 n_variables, then per variable:
    string name; u8 rank; u32 dims[rank];
    version >= 4: u8 dtype id (float32, int8, int16, int32, float16, bfloat16); u32 n_bytes
    version <  4: u8 item size (4 float32, 2 int16, 1 int8);           u32 n_items
    n_bytes of data, C order
  u32 n_aliases (version >= 3), then pairs (string alias, string target)
where a string is u16 length including a trailing NUL, the bytes, the NUL.

Quantised weights (int8 or int16 with a `<name>_scale` variable) are dequantised to float32:
the converter stored round(w * scale), with int8 scales per output row (127 / row max).
Pre-quantised AWQ weights (a `_zero` variable) are refused.
A model split into parts (model.bin.part1, .part2, possibly from different packages) is
read as one stream, so the parts never have to be joined on disk.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np

# the order of ctranslate2's DataType enum (include/ctranslate2/types.h)
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_LEGACY_ITEM_DTYPES = {4: "float32", 2: "int16", 1: "int8"}
MAX_BINARY_VERSION = 6


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands (message says why)."""


@dataclass
class CT2Model:
    spec: str                       # e.g. "WhisperSpec"
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]   # aliases included, sharing their target's array
    aliases: dict[str, str] = field(default_factory=dict)   # alias -> stored name
    dequantised: tuple[str, ...] = ()  # names whose stored dtype was int8/int16
    stored_dtypes: dict[str, str] = field(default_factory=dict)


class _Chained:
    """Sequential reads across several files, as if they were concatenated."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._index = 0
        self._file: BinaryIO | None = open(self._paths[0], "rb")
        self.position = 0

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0 and self._file is not None:
            chunk = self._file.read(n)
            chunks.append(chunk)
            n -= len(chunk)
            if n > 0:
                self._next()
        data = b"".join(chunks)
        self.position += len(data)
        return data

    def _next(self) -> None:
        assert self._file is not None
        self._file.close()
        self._index += 1
        self._file = open(self._paths[self._index], "rb") if self._index < len(self._paths) else None

    def at_end(self) -> bool:
        while self._file is not None:
            if self._file.read(1):
                return False
            self._next()
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def model_parts(directory: str | Path) -> list[Path]:
    """The model file(s) in a folder: model.bin, or model.bin.part1 .. partN in order."""
    directory = Path(directory)
    whole = directory / "model.bin"
    if whole.is_file():
        return [whole]
    parts = sorted(((int(m.group(1)), p) for p in directory.glob("model.bin.part*")
                    if (m := re.fullmatch(r"model\.bin\.part(\d+)", p.name))), key=lambda x: x[0])
    if not parts:
        raise FileNotFoundError(f"No model.bin (or model.bin.part1...) in {directory}")
    numbers = [n for n, _ in parts]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise CT2FormatError(f"{directory} has model.bin parts {numbers}: one is missing")
    return [p for _, p in parts]


def read_ct2_model(paths: str | Path | Iterable[str | Path], dequantise: bool = True) -> CT2Model:
    """Read a model.bin (a path, or the paths of its consecutive parts).

    dequantise=False refuses int8/int16-quantised weights instead of converting them."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("no model file given")
    stream = _Chained(paths)
    where = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"

    def take(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise CT2FormatError(f"{where} ends early at byte {stream.position} (truncated, or a part is missing)")
        return data

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        n = u("H")
        if n == 0:
            raise CT2FormatError(f"{where}: empty string at byte {stream.position}")
        return take(n)[:-1].decode("utf-8")

    try:
        version = u("I")
        if not 1 <= version <= MAX_BINARY_VERSION:
            raise CT2FormatError(f"{where} has binary version {version}; this reader knows 1-{MAX_BINARY_VERSION} "
                                 "(not a CTranslate2 model, or a newer one)")
        spec, revision = ("", 1) if version < 2 else (string(), u("I"))
        stored: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for _ in range(u("I")):
            name = string()
            shape = tuple(u("I") for _ in range(u("B")))
            if version >= 4:
                type_id = u("B")
                if type_id >= len(DTYPES):
                    raise CT2FormatError(f"{where}: variable {name} has unknown dtype id {type_id}")
                dtype, n_bytes = DTYPES[type_id], u("I")
            else:
                item = u("B")
                if item not in _LEGACY_ITEM_DTYPES:
                    raise CT2FormatError(f"{where}: variable {name} has item size {item}")
                dtype = _LEGACY_ITEM_DTYPES[item]
                n_bytes = u("I") * item
            raw = take(n_bytes)
            stored[name] = _array(raw, dtype, shape, name, where)
            dtypes[name] = dtype
        aliases = {}
        if version >= 3:
            for _ in range(u("I")):
                alias = string()
                aliases[alias] = string()
        if not stream.at_end():
            raise CT2FormatError(f"{where} has data after its last alias (wrong parts, or parts in the wrong order)")
    finally:
        stream.close()

    dequantised = _dequantise(stored, dtypes, aliases, where, refuse=not dequantise)
    variables = dict(stored)
    for alias, target in aliases.items():
        if target not in stored:
            raise CT2FormatError(f"{where}: alias {alias} names a missing variable {target}")
        variables[alias] = stored[target]
    return CT2Model(spec, revision, version, variables, aliases, dequantised, dtypes)


def _array(raw: bytes, dtype: str, shape: tuple[int, ...], name: str, where) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype == "bfloat16":          # numpy has no bfloat16: it is the top half of a float32
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if values.size != count:
        raise CT2FormatError(f"{where}: variable {name} has {len(raw)} bytes for shape {shape} of {dtype}")
    return values.reshape(shape).astype(values.dtype.newbyteorder("="), copy=False)


def _dequantise(stored: dict, dtypes: dict, aliases: dict, where, refuse: bool) -> tuple[str, ...]:
    """Replace quantised weights by float32 in place; drop their `_scale` variables."""
    if any(name.endswith("_zero") for name in stored):
        raise CT2FormatError(f"{where} holds pre-quantised (AWQ) weights; convert the model in float16 or float32")
    done = []
    for name in [n for n in stored if n.endswith("_scale")]:
        base = name[: -len("_scale")]
        if base not in stored:
            continue
        if refuse:
            raise CT2FormatError(f"{where} is quantised ({dtypes[base]} {base}); convert it in float16 or float32, "
                                 "or read it with dequantise=True")
        value, scale = stored[base].astype(np.float32), stored.pop(name).astype(np.float32)
        if scale.ndim == 1:              # int8: one scale per output row (dim 0), conv weights too
            scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
        stored[base] = value / scale
        done.append(base)
    for alias in [a for a in aliases if a.endswith("_scale")]:
        aliases.pop(alias)
    return tuple(done)
