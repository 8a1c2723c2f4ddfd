"""The shared NumPy building blocks (reference/_ops.py, reference/_conv.py) against scalar
formulations: the vectorised erf against math.erf over the whole double range, its coefficient
tables against a fresh mpmath derivation, and the in-place arithmetic of the activations,
softmax and normalisations against per-element loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference import _conv, _ops

ERF_ULPS = 2
"""Largest distance from math.erf, in units in the last place. math.erf (libm) is itself within
one ulp of the true value, so the vectorised erf is within 3 ulp of it (measured: 2 ulp from
math.erf and from a 40-digit mpmath erf)."""


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Doubles between a and b, counting across zero (+0 and -0 are 0 apart); NaN pairs are 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def ordinal(x):
        bits = x.view(np.int64)
        return np.where(bits < 0, np.int64(-(2**63)) - bits, bits)

    both_nan = np.isnan(a) & np.isnan(b)
    distance = np.abs(ordinal(np.where(both_nan, 0.0, a)) - ordinal(np.where(both_nan, 0.0, b)))
    return np.where(both_nan, 0, distance)


def math_erf(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in np.ravel(x)]).reshape(np.shape(x))


def erf_points() -> np.ndarray:
    """Points over the whole range: uniform in [-7, 7], log-uniform magnitudes from the smallest
    subnormal to the largest double (both signs), dense grids around the seams of the method
    (|x| = 1 and 6), and every power of two with its neighbours."""
    rng = np.random.default_rng(20210807)
    magnitudes = np.exp(rng.uniform(math.log(5e-324), math.log(1.7e308), 200_000))
    powers = 2.0 ** np.arange(-1074, 1024, dtype=np.float64)
    neighbours = np.concatenate([np.nextafter(powers, 0.0), powers, np.nextafter(powers, np.inf)])
    seams = np.concatenate([np.linspace(0.99, 1.01, 20_001), np.linspace(5.9, 6.1, 20_001)])
    positive = np.concatenate([rng.uniform(0.0, 7.0, 200_000), magnitudes, neighbours, seams])
    return np.concatenate([positive, -positive])


# --------------------------------------------------------------------------------------------
# erf


def test_erf_is_within_2_ulp_of_math_erf_over_the_whole_range():
    x = erf_points()
    got, want = _ops.erf(x), math_erf(x)
    distance = ulp_distance(got, want)
    worst = int(distance.argmax())
    assert distance.max() <= ERF_ULPS, (
        f"erf({x[worst]!r}) = {got[worst]!r}, math.erf gives {want[worst]!r}: {distance.max()} ulp apart "
        f"({np.count_nonzero(distance > ERF_ULPS)} of {x.size} points beyond {ERF_ULPS} ulp)"
    )


@pytest.mark.parametrize(
    "x, want",
    [
        (0.0, 0.0),
        (-0.0, -0.0),
        (math.inf, 1.0),
        (-math.inf, -1.0),
        (5e-324, math.erf(5e-324)),
        (-5e-324, math.erf(-5e-324)),
        (2.2250738585072014e-308, math.erf(2.2250738585072014e-308)),
        (1.0, math.erf(1.0)),
        (6.0, 1.0),
        (5.9, math.erf(5.9)),  # 1 - 7e-17: rounds to the double below 1
        (5.95, 1.0),
        (1.7976931348623157e308, 1.0),
        (-1.7976931348623157e308, -1.0),
    ],
)
def test_erf_special_values(x, want):
    got = _ops.erf(np.array([x]))[0]
    assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want), f"erf({x!r}) = {got!r}, expected {want!r}"


def test_erf_of_nan_is_nan_and_raises_no_warning():
    with np.errstate(all="raise"):
        got = _ops.erf(np.array([np.nan, 1e200, -1e300, 1e-320]))
    assert np.isnan(got[0]) and list(got[1:3]) == [1.0, -1.0]


def test_erf_is_odd_exactly():
    x = erf_points()
    np.testing.assert_array_equal(_ops.erf(-x), -_ops.erf(x))


def test_erf_against_40_digit_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-6.5, 6.5, 3000), np.exp(rng.uniform(-700, 1, 1000))])
    want = np.array([float(mpmath.erf(mpmath.mpf(float(v)))) for v in x])
    assert ulp_distance(_ops.erf(x), want).max() <= ERF_ULPS


@pytest.mark.parametrize(
    "x",
    [
        np.float64(0.3),
        np.array(0.3),
        np.array([[0.1, -2.0, 7.0], [1.0, -1.0, 0.5]])[:, ::2],  # not contiguous
        np.zeros((0, 3)),
        np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4),
        np.arange(-3, 4),
        np.linspace(-8, 8, 3 * (1 << 15) + 7),  # several blocks and a partial one
    ],
    ids=["scalar", "0-d", "strided", "empty", "float32", "int", "blocks"],
)
def test_erf_takes_any_array_and_keeps_its_shape(x):
    kept = np.array(x, copy=True)
    got = _ops.erf(x)
    assert got.dtype == np.float64 and got.shape == np.shape(x)
    assert ulp_distance(got, math_erf(np.asarray(x, dtype=np.float64))).max(initial=0) <= ERF_ULPS
    np.testing.assert_array_equal(x, kept)


def test_erf_coefficients_are_the_documented_chebyshev_fits():
    """Re-derives both tables as reference/_ops.py describes them (mpmath.chebyfit, 50 digits)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50

    def central(t):
        if t == 0:
            return 2 / mpmath.sqrt(mpmath.pi)
        x = mpmath.sqrt(t)
        return mpmath.erf(x) / x

    def scaled_complement(v):  # erfcx(x) at x = 72 / (5 v + 13) - 3, the inverse of v(x)
        x = 72 / (5 * v + 13) - 3
        return mpmath.erfc(x) * mpmath.exp(x * x)

    for table, function, interval, bound in (
        (_ops._ERF_CENTRAL, central, [0, 1], 1e-17),
        (_ops._ERFCX_TAIL, scaled_complement, [-1, 1], 2e-17),
    ):
        poly, error = mpmath.chebyfit(function, interval, len(table), error=True)
        assert error < bound
        derived = [float(c) for c in reversed(poly)]
        np.testing.assert_allclose(table, derived, rtol=1e-12, atol=0)


def test_erf_tail_variable_maps_one_and_six_to_the_ends():
    for x, v in ((1.0, 1.0), (6.0, -1.0)):
        assert (72.0 / (x + 3.0) - 13.0) / 5.0 == v


# --------------------------------------------------------------------------------------------
# Activations and softmax, against per-element formulas

RNG = np.random.default_rng(11)
VALUES = np.concatenate([RNG.standard_normal(400) * 4, [0.0, -0.0, 30.0, -30.0, 700.0, -700.0, 1e-300]])


def test_gelu_is_the_erf_formula_per_element():
    # 1 + erf(x / sqrt(2)) cancels for negative x: both sides carry an absolute error of a few
    # eps * |x| there (the erfs differ by up to 3 ulp), the formula's own conditioning.
    want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in VALUES])
    assert np.all(np.abs(_ops.gelu(VALUES) - want) <= 4 * 2.0**-52 * np.abs(VALUES))


def test_sigmoid_and_swish_per_element():
    def scalar_sigmoid(v):
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))

    np.testing.assert_allclose(_ops.sigmoid(VALUES), [scalar_sigmoid(v) for v in VALUES], rtol=4e-16, atol=0)
    np.testing.assert_allclose(_ops.swish(VALUES), [v * scalar_sigmoid(v) for v in VALUES], rtol=4e-16, atol=0)


@pytest.mark.parametrize("name", sorted(_ops.ACTIVATIONS))
def test_overwrite_gives_the_same_values_and_leaves_the_input_alone_without_it(name):
    x = VALUES.reshape(11, 37)
    kept = x.copy()
    plain = _ops.activation(name, x)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_array_equal(_ops.activation(name, x.copy(), overwrite=True), plain)


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax_per_row(axis):
    x = RNG.standard_normal((3, 4, 5)) * 10
    moved = np.moveaxis(x, axis, -1)
    want = np.empty_like(moved)
    for index in np.ndindex(moved.shape[:-1]):
        row = moved[index]
        exps = [math.exp(v - max(row)) for v in row]
        want[index] = [e / math.fsum(exps) for e in exps]
    np.testing.assert_allclose(_ops.softmax(x, axis=axis), np.moveaxis(want, -1, axis), rtol=1e-15, atol=0)


# --------------------------------------------------------------------------------------------
# Normalisations, against per-position loops


def test_layer_norm_per_position():
    x = RNG.standard_normal((2, 3, 4, 6)) * 3 + 5
    gamma, beta = RNG.standard_normal(6), RNG.standard_normal(6)
    want = np.empty_like(x)
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        mean = math.fsum(row) / row.size
        variance = math.fsum((v - mean) ** 2 for v in row) / row.size
        want[index] = [(v - mean) / math.sqrt(variance + 1e-6) * g + b for v, g, b in zip(row, gamma, beta)]
    np.testing.assert_allclose(_conv.layer_norm(x, gamma, beta, 1e-6), want, rtol=1e-13, atol=1e-14)


def test_group_norm_per_group():
    x = RNG.standard_normal((2, 3, 5, 8)) * 2 - 1
    gamma, beta = RNG.standard_normal(8), RNG.standard_normal(8)
    want = np.empty_like(x)
    for b in range(2):
        for g in range(4):
            block = x[b, :, :, 2 * g : 2 * g + 2]
            mean = math.fsum(block.ravel()) / block.size
            variance = math.fsum((v - mean) ** 2 for v in block.ravel()) / block.size
            channels = slice(2 * g, 2 * g + 2)
            want[b, :, :, channels] = (block - mean) / math.sqrt(variance + 1e-5) * gamma[channels] + beta[channels]
    np.testing.assert_allclose(_conv.group_norm(x, gamma, beta, groups=4, epsilon=1e-5), want, rtol=1e-13, atol=1e-14)


def test_batch_norm_per_channel():
    x = RNG.standard_normal((2, 3, 4, 5)) * 100
    gamma, beta, mean = RNG.standard_normal(5), RNG.standard_normal(5), RNG.standard_normal(5) * 100
    variance = RNG.uniform(0.5, 2, 5)
    want = np.empty_like(x)
    for index in np.ndindex(x.shape):
        c = index[-1]
        want[index] = (x[index] - mean[c]) / math.sqrt(variance[c] + 1e-5) * gamma[c] + beta[c]
    np.testing.assert_allclose(_conv.batch_norm(x, gamma, beta, mean, variance, 1e-5), want, rtol=1e-14, atol=1e-13)


# --------------------------------------------------------------------------------------------
# Convolutions, against a per-output loop


def loop_conv2d(x, kernel, strides, groups):
    kh, kw, per_group, out_channels = kernel.shape
    sh, sw = strides
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    per_out = out_channels // groups
    out = np.zeros((x.shape[0], out_h, out_w, out_channels))
    for b, y, z, o in np.ndindex(out.shape):
        g = o // per_out
        field = x[b, y * sh : y * sh + kh, z * sw : z * sw + kw, g * per_group : (g + 1) * per_group]
        out[b, y, z, o] = math.fsum((field * kernel[:, :, :, o]).ravel())
    return out


@pytest.mark.parametrize("band_elements", [1, 50, 1 << 20])
def test_conv2d_built_a_band_of_output_rows_at_a_time_matches_the_loop(monkeypatch, band_elements):
    monkeypatch.setattr(_conv, "_COLUMNS_BLOCK", band_elements)
    x = RNG.standard_normal((2, 7, 6, 6))
    kernel = RNG.standard_normal((3, 2, 3, 4))
    got = _conv.conv2d(x, kernel, strides=(2, 1), groups=2, bias=np.arange(4.0))
    np.testing.assert_allclose(got, loop_conv2d(x, kernel, (2, 1), 2) + np.arange(4.0), rtol=1e-13, atol=1e-13)


def test_depthwise_conv2d_matches_the_loop():
    x = RNG.standard_normal((2, 6, 7, 3))
    kernel = RNG.standard_normal((3, 2, 3, 2))
    got = _conv.depthwise_conv2d(x, kernel, strides=2)
    want = np.zeros(got.shape)
    for b, y, z, c, m in np.ndindex(*got.shape[:3], 3, 2):
        field = x[b, 2 * y : 2 * y + 3, 2 * z : 2 * z + 2, c]
        want[b, y, z, 2 * c + m] = math.fsum((field * kernel[:, :, c, m]).ravel())
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_pad_puts_zeros_around_the_map():
    x = RNG.standard_normal((2, 3, 4, 5))
    got = _conv.pad(x, ((1, 2), (0, 3)))
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0))))
    assert _conv.pad(x, ((0, 0), (0, 0))) is x
