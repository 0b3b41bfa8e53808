"""Read an array from untrusted ``.npy`` bytes with bounded work.

Flower ships every tensor as the bytes of ``np.save`` (an ``Array`` of stype
``numpy.ndarray``). ``np.load`` believes the header: a few bytes announcing a shape of
10**12 values make it try to allocate that much. :func:`read_npy` parses the header
itself (at most :data:`MAX_HEADER` bytes, one strict pattern, no ``eval``), compares
dtype and shape with what the caller expects, checks the byte length exactly, and only
then views the bytes as an array.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from fedfleet.shared.errors import ModelMismatchError

MAGIC = b"\x93NUMPY"
MAX_HEADER = 4096
"""Longest header accepted; numpy writes ~120 bytes for a model tensor."""

_HEADER = re.compile(
    r"\{'descr': *'(?P<descr>[<>|=][a-z][0-9]{1,2})', *"
    r"'fortran_order': *(?P<fortran>True|False), *"
    r"'shape': *\((?P<shape>[0-9, ]{0,400})\),? *\} *\n?")
_DIM = re.compile(r"[0-9]{1,18}")


class NpyError(ModelMismatchError):
    """The bytes are not the ``.npy`` array the caller expects; the message says why."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header announces, and where its data starts."""

    dtype: np.dtype
    fortran_order: bool
    shape: tuple[int, ...]
    offset: int


def read_header(data: bytes) -> NpyHeader:
    """Parse the header of ``.npy`` bytes (versions 1, 2 and 3).

    Raises
    ------
    NpyError
        If the bytes do not start with a well-formed header of a plain numeric dtype.
    """
    if len(data) < 10 or data[:6] != MAGIC:
        raise NpyError("not .npy data (no magic string)")
    major = data[6]
    if major == 1:
        size, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        size, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise NpyError(f"unknown .npy version {major}")
    if size > MAX_HEADER or start + size > len(data):
        raise NpyError(f".npy header of {size} bytes is too long or cut off")
    try:
        text = data[start:start + size].decode("ascii")
    except UnicodeDecodeError:
        raise NpyError(".npy header is not ASCII") from None
    match = _HEADER.fullmatch(text)
    if match is None:
        raise NpyError(".npy header is not a plain dtype/order/shape record")
    parts = [p.strip() for p in match.group("shape").split(",")]
    if parts and parts[-1] == "":
        parts.pop()
    if not all(_DIM.fullmatch(p) for p in parts):
        raise NpyError(".npy header has a malformed shape")
    try:
        dtype = np.dtype(match.group("descr"))
    except TypeError:
        raise NpyError(f".npy dtype {match.group('descr')} is unknown") from None
    if dtype.kind not in "biuf":
        raise NpyError(f".npy dtype {dtype.str} is not numeric")
    return NpyHeader(dtype, match.group("fortran") == "True",
                     tuple(int(p) for p in parts), start + size)


def read_npy(data: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return the array in ``data`` if it is exactly ``dtype`` and ``shape``.

    The header is checked against ``dtype`` (either byte order) and ``shape`` and the
    byte length against both before any array is made, so the work and memory are
    bounded by ``len(data)``. The result is a native-order copy.

    Raises
    ------
    NpyError
        Naming the first difference.
    """
    header = read_header(data)
    want = np.dtype(dtype)
    if header.dtype.kind != want.kind or header.dtype.itemsize != want.itemsize:
        raise NpyError(f".npy data is {header.dtype.str}, expected {want.name}")
    if header.shape != tuple(shape):
        raise NpyError(f".npy data announces shape {_short(header.shape)}, expected "
                       f"{tuple(shape)}")
    count = math.prod(shape)
    if len(data) - header.offset != count * want.itemsize:
        raise NpyError(f".npy data holds {len(data) - header.offset} bytes, its shape "
                       f"needs {count * want.itemsize}")
    try:
        flat = np.frombuffer(data, dtype=header.dtype, count=count, offset=header.offset)
        shaped = flat.reshape(tuple(shape), order="F" if header.fortran_order else "C")
    except ValueError as err:  # e.g. (0, 10**9, 10**9): no values, but too many dims
        raise NpyError(f".npy shape {_short(header.shape)} is not usable: {err}") from None
    return np.asarray(shaped.astype(want, order="C"))


def _short(shape: tuple[int, ...]) -> str:
    text = str(shape)
    return text if len(text) <= 60 else text[:57] + "..."
