"""Update compression: what the server rebuilds is close to what the client trained."""

from __future__ import annotations

import numpy as np
import pytest

from fedfleet.shared.compression import decode_update, encode_update, encode_weights
from fedfleet.shared.errors import ModelMismatchError


def _pair() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=8).astype(
        np.float32)]
    new = [b + rng.normal(scale=0.01, size=b.shape).astype(np.float32) for b in base]
    return base, new


@pytest.mark.parametrize(("method", "ratio", "tolerance"),
                         [("none", 1.0, 0.0), ("float16", 0.5, 1e-5),
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
    """Global weights are halved for compressed runs and untouched otherwise."""
    base, _ = _pair()
    assert encode_weights(base, "none")[0] is base[0]
    assert {a.dtype for a in encode_weights(base, "int8")} == {np.dtype(np.float16)}


def test_malformed_updates_are_refused() -> None:
    """Wrong counts and shapes are model mismatches naming the sender."""
    base, new = _pair()
    with pytest.raises(ModelMismatchError, match="node 9"):
        decode_update(encode_update(new, base, "int8")[:-1], base, "int8", "node 9")
    with pytest.raises(ModelMismatchError, match="tensor 1"):
        decode_update([new[0].astype(np.float16), np.zeros(3, np.float16)], base,
                      "float16", "node 9")
