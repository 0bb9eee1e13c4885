"""Reader for CTranslate2 ``model.bin`` files.

The layout is the one written by ``ctranslate2.specs.ModelSpec._serialize`` and
read by ``models/model.cc`` (all integers little-endian)::

    uint32  binary_version
    if binary_version >= 2:
        string  spec name            (e.g. "WhisperSpec")
        uint32  spec revision
    uint32  num_variables
    num_variables x:
        string  name                 (scopes joined by "/", e.g. "encoder/layer_0/ffn/linear_0/weight")
        uint8   rank
        uint32  dims[rank]
        if binary_version >= 4:
            uint8   dtype id         (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)
            uint32  num_bytes
        else:
            uint8   item size        (4 float32, 2 int16, 1 int8)
            uint32  num_items
        bytes   data[num_bytes]      (row-major, C order)
    if binary_version >= 3:
        uint32  num_aliases
        num_aliases x: string alias, string target variable name

where ``string`` is ``uint16 length`` (including a trailing NUL) followed by the bytes.

Aliases matter: the converter replaces a variable that is bit-identical to an
earlier one (alphabetical order) by an alias to it, so e.g. a tied output
projection may be stored only once.

A model may be shipped split into byte ranges (``model.bin.part1``,
``model.bin.part2``, ...); :func:`read_ct2_model` reads the parts as one stream,
so the joined file never exists on disk or in memory.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np

__all__ = ["CT2Model", "read_ct2_model", "CT2_DTYPES", "MAX_BINARY_VERSION"]

# Newest layout this reader knows (CTranslate2 >= 3.x writes 6; the variable
# records have not changed since 4, only the header).
MAX_BINARY_VERSION = 6

# DataType enum of include/ctranslate2/types.h, in order. bfloat16 has no numpy
# dtype: it is read as raw uint16 and widened to float32 by :func:`_bf16_to_f32`.
CT2_DTYPES: dict[int, str] = {
    0: "float32",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "float16",
    5: "bfloat16",
}
# Binary versions < 4 store an item size instead of a dtype id.
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}


class _ConcatReader(io.RawIOBase):
    """Read-only stream over several files laid end to end (one open file at a time)."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._index = 0
        self._current: BinaryIO | None = None
        self.size = sum(os.path.getsize(p) for p in self._paths)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._index < len(self._paths):
            if self._current is None:
                self._current = open(self._paths[self._index], "rb")
            n = self._current.readinto(view)
            if n:
                return n
            # This part is exhausted: a read may straddle the boundary, so move on.
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


@dataclass
class CT2Model:
    """Variables of a CTranslate2 model, as numpy arrays in their stored dtype."""

    binary_version: int
    spec: str
    spec_revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        # Aliases may in principle chain; follow them with a bound so a cycle cannot hang.
        for _ in range(len(self.aliases) + 1):
            if name in self.variables:
                return self.variables[name]
            if name not in self.aliases:
                break
            name = self.aliases[name]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.variables or name in self.aliases

    def keys(self) -> list[str]:
        """All names, stored variables and aliases alike."""
        return sorted({*self.variables, *self.aliases})

    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.variables.values())


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"truncated CTranslate2 model: wanted {n} bytes, got {len(data)}")
    return data


def _read_struct(stream: BinaryIO, fmt: str):
    fmt = "<" + fmt
    return struct.unpack(fmt, _read_exact(stream, struct.calcsize(fmt)))


def _read_string(stream: BinaryIO) -> str:
    (length,) = _read_struct(stream, "H")
    raw = _read_exact(stream, length)
    # The stored length counts the trailing NUL.
    return raw.rstrip(b"\x00").decode("utf-8")


def _read_array(stream: BinaryIO, dtype: str, shape: tuple[int, ...], num_bytes: int) -> np.ndarray:
    storage = np.dtype("uint16") if dtype == "bfloat16" else np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * storage.itemsize
    if num_bytes != expected:
        raise ValueError(f"variable of shape {shape} and dtype {dtype} should hold {expected} bytes, found {num_bytes}")
    array = np.empty(shape, dtype=storage)
    # readinto straight into the array: one copy of the weights, no intermediate bytes object.
    view = memoryview(array).cast("B") if array.ndim else memoryview(array.reshape(1)).cast("B")
    filled = 0
    while filled < num_bytes:
        n = stream.readinto(view[filled:])
        if not n:
            raise ValueError("truncated CTranslate2 model while reading variable data")
        filled += n
    if dtype == "bfloat16":
        array = _bf16_to_f32(array)
    return array


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _as_paths(path: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if path.is_dir():
            path = path / "model.bin"
        if path.exists():
            return [path]
        # `model.bin` absent but `model.bin.part1..N` beside it: read the parts in order.
        parts = sorted(path.parent.glob(path.name + ".part*"), key=lambda p: int(p.suffix[5:] or 0))
        if not parts:
            raise FileNotFoundError(path)
        return parts
    paths = [Path(p) for p in path]
    if not paths:
        raise ValueError("no CTranslate2 model file given")
    return paths


def read_ct2_model(path: str | os.PathLike | Iterable[str | os.PathLike]) -> CT2Model:
    """Read a CTranslate2 ``model.bin``.

    Args:
        path: a ``model.bin`` file, a model directory, or an ordered sequence of
            byte-range parts (``[".../model.bin.part1", ".../model.bin.part2"]``)
            that concatenate to one ``model.bin``.

    Returns:
        A :class:`CT2Model`; float16 weights stay float16 (cast when mapping).
    """
    paths = _as_paths(path)
    with _ConcatReader(paths) as raw, io.BufferedReader(raw, buffer_size=1 << 20) as stream:
        (binary_version,) = _read_struct(stream, "I")
        if not 1 <= binary_version <= MAX_BINARY_VERSION:
            raise ValueError(
                f"unsupported CTranslate2 binary version {binary_version} in {paths[0]} "
                f"(this reader knows 1..{MAX_BINARY_VERSION}); is this a CTranslate2 model.bin?"
            )
        spec, spec_revision = "", 1
        if binary_version >= 2:
            spec = _read_string(stream)
            (spec_revision,) = _read_struct(stream, "I")

        model = CT2Model(binary_version=binary_version, spec=spec, spec_revision=spec_revision)
        (num_variables,) = _read_struct(stream, "I")
        for _ in range(num_variables):
            name = _read_string(stream)
            (rank,) = _read_struct(stream, "B")
            shape = tuple(_read_struct(stream, f"{rank}I")) if rank else ()
            if binary_version >= 4:
                type_id, num_bytes = _read_struct(stream, "BI")
                if type_id not in CT2_DTYPES:
                    raise ValueError(f"variable {name!r}: unknown CTranslate2 dtype id {type_id}")
                dtype = CT2_DTYPES[type_id]
            else:
                item_size, num_items = _read_struct(stream, "BI")
                dtype = _ITEM_SIZE_DTYPES[item_size]
                num_bytes = num_items * item_size
            if name in model.variables:
                raise ValueError(f"duplicate variable {name!r}")
            model.variables[name] = _read_array(stream, dtype, shape, num_bytes)

        if binary_version >= 3:
            (num_aliases,) = _read_struct(stream, "I")
            for _ in range(num_aliases):
                alias = _read_string(stream)
                model.aliases[alias] = _read_string(stream)

        trailing = stream.read(1)
        if trailing:
            raise ValueError(f"unexpected data after the end of the CTranslate2 model in {paths}")
    for alias, target in model.aliases.items():
        if target not in model:
            raise ValueError(f"alias {alias!r} points to unknown variable {target!r}")
    return model
