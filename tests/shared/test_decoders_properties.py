"""Property tests of the decoders a device's bytes go through (Hypothesis).

For arbitrary input each decoder either returns what the caller asked for or raises
its one error type, and never allocates much more than its input (or the model) is
big; honest input round-trips. Measured with tracemalloc, which sees numpy's buffers.
"""

from __future__ import annotations

import io
import math
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedfleet.shared.compression import decode_update, encode_update, pack_float16, unpack_float16
from fedfleet.shared.errors import ModelMismatchError
from fedfleet.shared.npy import NpyError, read_header, read_npy

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
DTYPES = st.sampled_from(["float32", "float64", "int8", "int64", "uint8"])


def _peak(func: Callable[[], Any]) -> tuple[Any, int]:
    """Return func()'s result (or the exception it raised) and its peak allocation."""
    tracemalloc.start()
    try:
        result: Any = func()
    except Exception as err:  # the caller checks which one it was
        result = err
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header(text: str, version: int = 1) -> bytes:
    size = 2 if version == 1 else 4
    return (b"\x93NUMPY" + bytes([version, 0]) + len(text).to_bytes(size, "little")
            + text.encode("latin-1"))


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_an_npy_error_or_an_array(data: bytes) -> None:
    result, peak = _peak(lambda: read_npy(data, "float32", (3, 4)))
    assert isinstance(result, (NpyError, np.ndarray))
    assert peak < 64 * 1024 + 4 * len(data)


@FAST
@given(shape=st.lists(st.integers(0, 10**15), max_size=8), descr=st.sampled_from(
    ["<f4", ">f4", "|u1", "<i8", "|O", "<c8", "<U3", "<x4", "|b1", "<m8"]),
    fortran=st.booleans(), tail=st.binary(max_size=64), version=st.sampled_from([1, 2, 3]))
def test_any_announced_shape_is_refused_or_exact(shape: list[int], descr: str,
                                                 fortran: bool, tail: bytes,
                                                 version: int) -> None:
    """A header may announce anything; work stays bounded by the bytes given."""
    text = (f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': "
            f"{tuple(shape)}, }}").ljust(100) + "\n"
    data = _header(text, version) + tail
    result, peak = _peak(lambda: read_npy(data, "float32", tuple(shape)))
    if isinstance(result, np.ndarray):
        assert result.shape == tuple(shape) and result.dtype == np.float32
        assert result.nbytes == len(tail)
    else:
        assert isinstance(result, NpyError), result
    assert peak < 64 * 1024 + 4 * len(data)


@FAST
@given(hnp.arrays(DTYPES, SHAPES), st.booleans())
def test_honest_npy_round_trips(array: np.ndarray, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    data = _npy(array)
    header = read_header(data)
    assert header.shape == array.shape
    got = read_npy(data, array.dtype.name, array.shape)
    assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, array)


MODEL = [(4, 3), (3,), ()]
COUNT = sum(math.prod(s) for s in MODEL)


@FAST
@given(header=st.lists(st.integers(-2, 2**40), max_size=12),
       payload=st.one_of(st.binary(max_size=300),
                         st.integers(0, 10**6).map(lambda n: zlib.compress(bytes(n)))),
       expect=st.booleans())
def test_float16_unpack_never_inflates_beyond_the_model(header: list[int], payload: bytes,
                                                        expect: bool) -> None:
    """Arbitrary header and payload: a ModelMismatchError, or exactly the model."""
    arrays = [np.array(header, np.int64), np.frombuffer(payload, np.uint8)]

    def unpack() -> list[np.ndarray]:
        return unpack_float16(arrays, "t", expect=MODEL if expect else None)

    result, peak = _peak(unpack)
    if isinstance(result, list):
        shapes = [r.shape for r in result]
        assert not expect or shapes == MODEL
        assert sum(r.size for r in result) <= 2 * len(payload) * 1100
    else:
        assert isinstance(result, ModelMismatchError), result
    if expect:
        assert peak < 64 * 1024 + 4 * len(payload)


@FAST
@given(st.lists(hnp.arrays(np.float32, SHAPES, elements=st.floats(-1e4, 1e4, width=32)),
                max_size=4))
def test_float16_pack_round_trips(tensors: list[np.ndarray]) -> None:
    got = unpack_float16(pack_float16(tensors), "t",
                         expect=[t.shape for t in tensors])
    for a, b in zip(got, tensors, strict=True):
        np.testing.assert_array_equal(a, b.astype(np.float16).astype(np.float32))


BASE = [np.zeros(s, np.float32) for s in MODEL]


@FAST
@given(st.lists(hnp.arrays(st.sampled_from(["int8", "float32", "float64", "int64"]),
                           SHAPES), max_size=8))
def test_int8_decode_refuses_anything_but_the_model(arrays: list[np.ndarray]) -> None:
    result, peak = _peak(lambda: decode_update(arrays, BASE, "int8", "node 1"))
    if isinstance(result, list):
        assert [r.shape for r in result] == MODEL
        assert all(r.dtype == np.float32 for r in result)
    else:
        assert isinstance(result, ModelMismatchError), result
    assert peak < 64 * 1024 + 8 * COUNT * 4


@FAST
@given(st.tuples(*[hnp.arrays(np.float32, st.just(s), elements=st.floats(-10, 10, width=32))
                   for s in MODEL]),
       st.sampled_from(["float16", "int8"]))
def test_honest_updates_round_trip(new: tuple[np.ndarray, ...], method: str) -> None:
    got = decode_update(encode_update(list(new), BASE, method), BASE, method, "node 1")
    tolerance = 0.01 if method == "float16" else 10 / 127
    for a, b in zip(got, new, strict=True):
        np.testing.assert_allclose(a, b, atol=tolerance)


def test_a_zlib_bomb_stops_one_byte_past_the_model() -> None:
    """2 MB of zeros in ~2 KB: inflating stops one byte past what the model needs."""
    bomb = np.frombuffer(zlib.compress(bytes(2 * 10**6)), np.uint8)
    header = pack_float16([np.zeros(s, np.float32) for s in MODEL])[0]
    result, peak = _peak(lambda: unpack_float16([header, bomb], "t", expect=MODEL))
    assert isinstance(result, ModelMismatchError) and "is not complete" in str(result)
    assert peak < 64 * 1024
