"""Flow <-> uint8 mappings: round-trip error, zero, clipping, and the TSN/denseflow formula."""
from __future__ import annotations

import numpy as np
import pytest

from flowprep.quantize import MAPPINGS, dequantize, quantize, step


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("bound", [20.0, 7.5, 1.0])
def test_round_trip_within_half_a_step(mapping, bound):
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.uniform(-bound, bound, 100_000), np.linspace(-bound, bound, 4001)]).astype(np.float32)
    back = dequantize(quantize(f, bound, mapping), bound, mapping)
    assert back.dtype == np.float32 and back.shape == f.shape
    err = np.abs(back - f)
    half = step(bound, mapping) / 2
    # float32 arithmetic on values up to the bound adds a few ulps of the bound
    assert err.max() <= half + 4 * np.finfo(np.float32).eps * bound, (err.max(), half)
    # Rounding, not truncation: errors use the whole half step, and on average a quarter of a step.
    assert err.max() > 0.95 * half
    assert abs(err.mean() - half / 2) < 0.05 * half


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_codes_are_monotonic_and_use_the_range(mapping):
    f = np.linspace(-25, 25, 10_001, dtype=np.float32)
    q = quantize(f, 20.0, mapping)
    assert q.dtype == np.uint8
    assert np.all(np.diff(q.astype(int)) >= 0)
    lo, hi = (1, 255) if mapping == "symmetric" else (0, 255)
    assert q.min() == lo and q.max() == hi
    assert len(np.unique(q)) == hi - lo + 1  # every code between is used


def test_symmetric_keeps_zero_exact():
    assert quantize(np.float32(0.0), 20.0)[()] == 128
    assert dequantize(np.uint8(128), 20.0)[()] == 0.0
    # Still pixels and flow of +-k steps decode exactly to +-k steps, the same both ways.
    k = np.arange(-127, 128)
    f = (k * step(20.0)).astype(np.float32)
    np.testing.assert_array_equal(quantize(f, 20.0), (128 + k).astype(np.uint8))
    back = dequantize(quantize(f, 20.0), 20.0)
    np.testing.assert_allclose(back, -back[::-1], atol=1e-6)


def test_tsn_mapping_is_the_denseflow_formula_and_shifts_zero():
    bound = 20.0
    f = np.random.default_rng(1).uniform(-30, 30, 10_000).astype(np.float32)
    expected = np.round((np.clip(f, -bound, bound) + bound) * 255 / (2 * bound)).astype(np.uint8)
    np.testing.assert_array_equal(quantize(f, bound, "tsn"), expected)
    # Code 127.5 would be zero: a still pixel comes back as +0.078 px (half a step).
    zero_back = dequantize(quantize(np.float32(0.0), bound, "tsn"), bound, "tsn")[()]
    assert zero_back == pytest.approx(0.0784, abs=5e-4)
    assert zero_back == pytest.approx(step(bound, "tsn") / 2, rel=1e-5)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_clipping_at_the_bound(mapping):
    bound = 20.0
    f = np.array([-1e6, -40.0, -20.0, 20.0, 40.0, 1e6, np.float32(np.inf), -np.float32(np.inf)], np.float32)
    back = dequantize(quantize(f, bound, mapping), bound, mapping)
    np.testing.assert_allclose(back, np.sign(f) * bound, atol=1e-5)


def test_flow_shape_preserved():
    flow = np.random.default_rng(2).normal(0, 5, (3, 6, 7, 2)).astype(np.float32)
    q = quantize(flow)
    assert q.shape == flow.shape and dequantize(q).shape == flow.shape


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown flow mapping 'linear'"):
        quantize(np.zeros(3), 20.0, "linear")
    with pytest.raises(ValueError, match="bound must be positive"):
        dequantize(np.zeros(3, np.uint8), 0.0)
    with pytest.raises(ValueError, match="bound must be positive"):
        step(-1.0)
