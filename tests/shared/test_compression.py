"""Update compression: what the server rebuilds is close to what the client trained."""

from __future__ import annotations

import numpy as np
import pytest

from fedfleet.shared.compression import (
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
    pack_float16,
    unpack_float16,
)
from fedfleet.shared.errors import ModelMismatchError


def _pair() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(64, 32)).astype(np.float32), rng.normal(size=32).astype(
        np.float32)]
    new = [b + rng.normal(scale=0.01, size=b.shape).astype(np.float32) for b in base]
    return base, new


@pytest.mark.parametrize(("method", "ratio", "tolerance"),
                         [("none", 1.0, 0.0), ("float16", 0.47, 1e-5),
                          ("int8", 0.25, 2e-4)])
def test_round_trip_size_and_error(method: str, ratio: float, tolerance: float) -> None:
    """Each method shrinks the payload by its factor and keeps the error small."""
    base, new = _pair()
    encoded = encode_update(new, base, method)
    size = sum(a.nbytes for a in encoded) / sum(a.nbytes for a in new)
    assert size == pytest.approx(ratio, abs=0.02)
    decoded = decode_update(encoded, base, method, "node 1")
    for got, want in zip(decoded, new, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=tolerance)


def test_downstream_weights_go_as_float16_only_when_compressing() -> None:
    """Global weights are packed float16 for compressed runs and untouched otherwise."""
    base, _ = _pair()
    assert encode_weights(base, "none")[0] is base[0]
    packed = encode_weights(base, "int8")
    assert sum(a.nbytes for a in packed) < 0.5 * sum(a.nbytes for a in base)
    for got, want in zip(decode_weights(packed, "int8"), base, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4)])
def test_packed_float16_keeps_any_shape_exactly(shape: tuple[int, ...]) -> None:
    """Packing is lossless beyond the float16 rounding, for scalars and empty tensors."""
    tensor = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    got = unpack_float16(pack_float16([tensor, tensor * 2]), "t")
    assert [g.shape for g in got] == [shape, shape]
    np.testing.assert_array_equal(got[0], tensor.astype(np.float16).astype(np.float32))
    assert unpack_float16(pack_float16([]), "t") == []


def test_tampered_packed_tensors_are_refused() -> None:
    """A wrong header, a truncated payload or an inflate bomb is a clear mismatch."""
    header, payload = pack_float16([np.ones((4, 4), np.float32)])
    with pytest.raises(ModelMismatchError, match="needs 32"):
        unpack_float16([header, payload[:-4]], "t")
    for bad in ([2, 2, 4, 4], [1, 2, 4], [1, 1, -3], [1, 2, 4, 4, 9]):
        with pytest.raises(ModelMismatchError, match="not a packed float16 header"):
            unpack_float16([np.array(bad, np.int64), payload], "t")
    bomb = np.frombuffer(__import__("zlib").compress(bytes(10**7)), np.uint8)
    with pytest.raises(ModelMismatchError, match="needs 32"):
        unpack_float16([header, bomb], "t")
    with pytest.raises(ModelMismatchError, match="pair"):
        unpack_float16([header], "t")


def test_malformed_updates_are_refused() -> None:
    """Wrong counts and shapes are model mismatches naming the sender."""
    base, new = _pair()
    with pytest.raises(ModelMismatchError, match="node 9"):
        decode_update(encode_update(new, base, "int8")[:-1], base, "int8", "node 9")
    with pytest.raises(ModelMismatchError, match="tensor 1"):
        decode_update(pack_float16([new[0], np.zeros(3)]), base, "float16", "node 9")
    with pytest.raises(ModelMismatchError, match="node 9"):
        decode_update([new[0].astype(np.float16), new[1].astype(np.float16)], base,
                      "float16", "node 9")
