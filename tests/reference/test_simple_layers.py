"""Self-tests of the reference ChannelAffine, BiasLayer, mlp_block and activations against
per-element formulations written with Python scalars and the ``math`` module."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import reference
from reference import _ops

# Loop and vectorised versions both compute in float64 and differ only in the order of their
# summations (and in libm versus NumPy for exp/tanh/log1p), so they agree to a few ulps of O(1)
# values: 1e-12 leaves a wide margin while still catching any wrong formula or index.
RTOL = 1e-12
ATOL = 1e-12


# --------------------------------------------------------------------------------------------
# Scalar formulas, one per activation name


def scalar_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


SCALAR_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: x if x > 0 else 0.0,
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "swish": lambda x: x * scalar_sigmoid(x),
    "sigmoid": scalar_sigmoid,
    "tanh": math.tanh,
    "elu": lambda x: x if x > 0 else math.expm1(x),  # alpha 1
    "softplus": lambda x: math.log1p(math.exp(x)),
}
"""Textbook definitions; valid for the moderate arguments they are evaluated at here."""

# Moderate arguments, both signs, zero, and the relu6 kink region.
GRID = np.concatenate([np.linspace(-8.0, 8.0, 161), [-1e-9, 0.0, 1e-9, 5.999, 6.0, 6.001]])


def test_every_activation_has_a_scalar_formula():
    assert set(_ops.ACTIVATIONS) == set(SCALAR_ACTIVATIONS), (
        f"expected the activations {sorted(SCALAR_ACTIVATIONS)}, the reference has {sorted(_ops.ACTIVATIONS)}"
    )


@pytest.mark.parametrize("name", sorted(SCALAR_ACTIVATIONS))
def test_activation_matches_scalar_formula(name):
    got = _ops.activation(name, GRID.copy())
    want = np.array([SCALAR_ACTIVATIONS[name](float(x)) for x in GRID])
    assert got.dtype == np.float64, f"{name}: expected float64, got {got.dtype}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"activation {name!r} differs from its scalar formula")


def test_gelu_is_the_exact_erf_form():
    x = np.concatenate([GRID, [-40.0, -12.5, 12.5, 40.0]])
    got = _ops.gelu(x)
    want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg="gelu differs from 0.5*x*(1+erf(x/sqrt(2)))")
    # The tanh approximation differs by up to ~5e-4 near |x| = 2; make sure that is not what we have.
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert np.max(np.abs(got - tanh_form)) > 1e-5, "gelu looks like the tanh approximation, expected the erf form"


@pytest.mark.parametrize("name", sorted(SCALAR_ACTIVATIONS))
def test_activation_is_finite_and_overflow_free_at_plus_minus_1000(name):
    # exp(-1000) underflowing to 0 is the correct result; overflow, inf/inf or 0*inf is not.
    x = np.array([-1000.0, 1000.0])
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        got = _ops.activation(name, x)
    assert np.all(np.isfinite(got)), f"{name}: expected finite values at -1000 and 1000, got {got}"


def test_sigmoid_limits_at_plus_minus_1000():
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        got = _ops.sigmoid(np.array([-1000.0, 1000.0]))
    assert np.all(np.isfinite(got)), f"sigmoid at +-1000 should be finite, got {got}"
    assert got[0] == 0.0 and got[1] == 1.0, f"sigmoid(-1000), sigmoid(1000) should be 0 and 1, got {got}"


def test_sigmoid_keeps_relative_accuracy_for_large_negative_arguments():
    # exp(-30) / (1 + exp(-30)): a 1 - sigmoid(30) formulation would lose every digit here.
    got = _ops.sigmoid(np.array([-30.0, -700.0]))
    want = [math.exp(-30.0) / (1.0 + math.exp(-30.0)), math.exp(-700.0)]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg="sigmoid loses relative accuracy for large negative x")


def test_sigmoid_is_symmetric():
    got = _ops.sigmoid(GRID) + _ops.sigmoid(-GRID)
    np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-15, err_msg="sigmoid(x) + sigmoid(-x) should be 1")


def test_softplus_limits_at_plus_minus_1000():
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        got = _ops.softplus(np.array([-1000.0, 1000.0]))
    assert np.all(np.isfinite(got)), f"softplus at +-1000 should be finite, got {got}"
    assert got[0] == 0.0, f"softplus(-1000) should be 0 (exp(-1000) underflows), got {got[0]}"
    assert got[1] == 1000.0, f"softplus(1000) should be 1000, got {got[1]}"


def test_softplus_keeps_relative_accuracy_for_large_negative_arguments():
    # softplus(x) = log1p(exp(x)) ~ exp(x) for x << 0; log(1 + exp(x)) would round to 0.
    got = _ops.softplus(np.array([-30.0, -700.0]))
    want = [math.log1p(math.exp(-30.0)), math.exp(-700.0)]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg="softplus loses relative accuracy for large negative x")


# --------------------------------------------------------------------------------------------
# ChannelAffine and BiasLayer, element by element

SHAPES = [(3, 4), (2, 5, 3), (2, 3, 4, 5), (1, 1, 1, 1)]


def _shape_id(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", SHAPES, ids=[_shape_id(s) for s in SHAPES])
def test_channel_affine_matches_elementwise_loop(shape, use_bias):
    rng = np.random.default_rng(sum(shape) + (0 if use_bias else 50))
    inputs = rng.normal(size=shape)
    weights = {"weight": rng.normal(size=shape[-1])}
    if use_bias:
        weights["bias"] = rng.normal(size=shape[-1])
    got = reference.forward("ChannelAffine", inputs, weights=weights, use_bias=use_bias)
    want = np.zeros(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        channel = index[-1]
        value = float(inputs[index]) * float(weights["weight"][channel])
        if use_bias:
            value += float(weights["bias"][channel])
        want[index] = value
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"ChannelAffine {shape} use_bias={use_bias} differs from the loop")


def test_channel_affine_output_ignores_weight_init_value():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(2, 3, 4))
    weights = {"weight": rng.normal(size=4), "bias": rng.normal(size=4)}
    outputs = [reference.forward("ChannelAffine", inputs, weights=weights, weight_init_value=v) for v in (1, 0.0, -1.5)]
    for value, out in zip((0.0, -1.5), outputs[1:]):
        np.testing.assert_array_equal(out, outputs[0], err_msg=f"weight_init_value={value} changed the output; it only sets the initial weight")


@pytest.mark.parametrize("shape", SHAPES, ids=[_shape_id(s) for s in SHAPES])
def test_bias_layer_matches_elementwise_loop(shape):
    rng = np.random.default_rng(200 + sum(shape))
    inputs = rng.normal(size=shape)
    bias = rng.normal(size=shape[-1])
    got = reference.forward("BiasLayer", inputs, weights={"bias": bias})
    want = np.zeros(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        want[index] = float(inputs[index]) + float(bias[index[-1]])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"BiasLayer {shape} differs from the loop")


# --------------------------------------------------------------------------------------------
# mlp_block, token by token


def loop_mlp_block(inputs, weights, scalar_activation):
    """``Dense_1(act(Dense_0(x)))`` per token with explicit dot products."""
    batch, tokens, channels = inputs.shape
    kernel_0, bias_0 = weights["Dense_0/kernel"], weights["Dense_0/bias"]
    kernel_1, bias_1 = weights["Dense_1/kernel"], weights["Dense_1/bias"]
    hidden_dim = kernel_0.shape[1]
    out = np.zeros((batch, tokens, channels))
    for b in range(batch):
        for t in range(tokens):
            hidden = []
            for h in range(hidden_dim):
                total = float(bias_0[h])
                for c in range(channels):
                    total += float(inputs[b, t, c]) * float(kernel_0[c, h])
                hidden.append(scalar_activation(total))
            for c in range(channels):
                total = float(bias_1[c])
                for h in range(hidden_dim):
                    total += hidden[h] * float(kernel_1[h, c])
                out[b, t, c] = total
    return out


def random_mlp_weights(rng, channels, hidden_dim):
    return {
        "Dense_0/kernel": rng.normal(size=(channels, hidden_dim)) / math.sqrt(channels),
        "Dense_0/bias": rng.normal(size=hidden_dim),
        "Dense_1/kernel": rng.normal(size=(hidden_dim, channels)) / math.sqrt(hidden_dim),
        "Dense_1/bias": rng.normal(size=channels),
    }


MLP_CASES = [((2, 5, 4), 7), ((1, 9, 6), 3), ((3, 1, 1), 1), ((1, 4, 3), 12)]


@pytest.mark.parametrize("shape,hidden_dim", MLP_CASES, ids=[f"{_shape_id(s)}-h{h}" for s, h in MLP_CASES])
def test_mlp_block_default_gelu_matches_token_loop_with_math_erf(shape, hidden_dim):
    rng = np.random.default_rng(300 + sum(shape) + hidden_dim)
    inputs = rng.normal(size=shape)
    weights = random_mlp_weights(rng, shape[-1], hidden_dim)
    got = reference.forward("mlp_block", inputs, weights=weights, hidden_dim=hidden_dim)
    want = loop_mlp_block(inputs, weights, lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"mlp_block {shape} hidden {hidden_dim} (gelu) differs from the loop")


@pytest.mark.parametrize("name", sorted(SCALAR_ACTIVATIONS))
def test_mlp_block_with_each_activation_matches_token_loop(name):
    rng = np.random.default_rng(400 + sorted(SCALAR_ACTIVATIONS).index(name))
    inputs = rng.normal(size=(2, 3, 4)) * 3.0  # wide enough to reach relu6's upper clip
    weights = random_mlp_weights(rng, 4, 5)
    got = reference.forward("mlp_block", inputs, weights=weights, hidden_dim=5, activation=name)
    want = loop_mlp_block(inputs, weights, SCALAR_ACTIVATIONS[name])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"mlp_block with activation {name!r} differs from the loop")
