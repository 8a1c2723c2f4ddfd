"""Self-tests of the reference spatial_gating_block against element-by-element loops written
with Python scalars and the ``math`` module."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference

RTOL = 1e-12
ATOL = 1e-12

LAYER = "spatial_gating_block"


def loop_spatial_gating(inputs, weights, epsilon=1e-5):
    """Gate = first channel half, normalised and token-mixed = second half, element by element."""
    batch, tokens, channels = inputs.shape
    half = channels // 2
    gamma, beta = weights["vv_ln/gamma"], weights["vv_ln/beta"]
    kernel, bias = weights["vv_dense/kernel"], weights["vv_dense/bias"]
    out = np.zeros((batch, tokens, half))
    for b in range(batch):
        normalised = []
        for n in range(tokens):
            values = [float(inputs[b, n, half + c]) for c in range(half)]
            mean = sum(values) / half
            variance = sum((v - mean) ** 2 for v in values) / half
            normalised.append([(v - mean) / math.sqrt(variance + epsilon) * float(gamma[c]) + float(beta[c]) for c, v in enumerate(values)])
        for m in range(tokens):
            for c in range(half):
                mixed = float(bias[m]) + sum(normalised[n][c] * float(kernel[n, m]) for n in range(tokens))
                out[b, m, c] = float(inputs[b, m, c]) * mixed
    return out


def random_weights(rng, tokens, channels):
    half = channels // 2
    return {
        "vv_ln/gamma": rng.normal(size=half),
        "vv_ln/beta": rng.normal(size=half),
        "vv_dense/kernel": rng.normal(size=(tokens, tokens)) / math.sqrt(tokens),
        "vv_dense/bias": rng.normal(size=tokens),
    }


SHAPES = [(2, 5, 6), (3, 4, 2), (2, 1, 8), (1, 4, 8), (1, 7, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_spatial_gating_matches_element_loop(shape):
    rng = np.random.default_rng(sum(shape) * 13)
    inputs = rng.normal(size=shape)
    weights = random_weights(rng, shape[1], shape[2])
    got = reference.forward(LAYER, inputs, weights=weights)
    want = loop_spatial_gating(inputs, weights)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"spatial_gating_block {shape} differs from the loop")


def test_first_half_gates_and_second_half_is_normalised():
    # Gate half all ones, normalised half arbitrary: the output is the token-mixed second half.
    # Then an identity mixing with gamma 0, beta 1 and bias 0 makes that factor 1: the output is
    # the first half itself.
    rng = np.random.default_rng(1)
    tokens, half = 4, 3
    gate, gated = rng.normal(size=(2, tokens, half)), rng.normal(size=(2, tokens, half)) * 2.0 + 1.0
    weights = random_weights(rng, tokens, 2 * half)

    ones_gate = reference.forward(LAYER, np.concatenate([np.ones_like(gate), gated], axis=-1), weights=weights)
    mean = gated.mean(axis=-1, keepdims=True)
    normalised = (gated - mean) / np.sqrt(gated.var(axis=-1, keepdims=True) + 1e-5) * weights["vv_ln/gamma"] + weights["vv_ln/beta"]
    mixed = np.einsum("bnc,nm->bmc", normalised, weights["vv_dense/kernel"]) + weights["vv_dense/bias"][:, None]
    np.testing.assert_allclose(ones_gate, mixed, rtol=RTOL, atol=ATOL, err_msg="with a gate of ones the output should be the mixed second half")

    unit = {"vv_ln/gamma": np.zeros(half), "vv_ln/beta": np.ones(half), "vv_dense/kernel": np.eye(tokens), "vv_dense/bias": np.zeros(tokens)}
    passed = reference.forward(LAYER, np.concatenate([gate, gated], axis=-1), weights=unit)
    np.testing.assert_array_equal(passed, gate, err_msg="with a unit gated factor the output should be the first channel half")


def test_vv_dense_mixes_tokens_with_one_bias_per_output_token():
    # kernel[n, m] moves token n to token m; the bias is indexed by the output token.
    tokens, half = 3, 2
    shift = np.zeros((tokens, tokens))
    shift[0, 1] = shift[1, 2] = shift[2, 0] = 1.0
    weights = {"vv_ln/gamma": np.ones(half), "vv_ln/beta": np.zeros(half), "vv_dense/kernel": shift, "vv_dense/bias": np.array([10.0, 20.0, 30.0])}
    gated = np.array([[[1.0, -1.0], [2.0, -2.0], [-3.0, 3.0]]])  # normalises to +-1 (to within the epsilon)
    out = reference.forward(LAYER, np.concatenate([np.ones_like(gated), gated], axis=-1), weights=weights)
    scale = 1.0 / np.sqrt(np.array([1.0, 4.0, 9.0]) + 1e-5)
    normalised = gated * scale[None, :, None]
    want = np.stack([normalised[0, 2] + 10.0, normalised[0, 0] + 20.0, normalised[0, 1] + 30.0])[None]
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL, err_msg="vv_dense should send token n to token m by kernel[n, m], bias by output token")


def test_layer_norm_epsilon_is_1e_5_not_1e_6():
    shape = (2, 5, 6)
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=shape) * 1e-3  # variance ~1e-6: the epsilon dominates
    weights = random_weights(rng, 5, 6)
    got = reference.forward(LAYER, inputs, weights=weights)
    with_1e_5, with_1e_6 = loop_spatial_gating(inputs, weights, 1e-5), loop_spatial_gating(inputs, weights, 1e-6)
    np.testing.assert_allclose(got, with_1e_5, rtol=RTOL, atol=1e-15, err_msg="spatial_gating_block at small variance differs from the epsilon 1e-5 loop")
    gap = np.max(np.abs(with_1e_5 - with_1e_6))
    assert gap > 1e-4, f"the inputs should separate epsilon 1e-5 from 1e-6 (outputs ~1e-3), got a gap of only {gap:.3g}"


def test_two_channels_normalise_one_channel_to_beta():
    # One channel per half: LayerNorm returns beta whatever the input.
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(2, 4, 2))
    weights = random_weights(rng, 4, 2)
    got = reference.forward(LAYER, inputs, weights=weights)
    mixed = weights["vv_ln/beta"][0] * weights["vv_dense/kernel"].sum(axis=0) + weights["vv_dense/bias"]
    np.testing.assert_allclose(got, inputs[..., :1] * mixed[None, :, None], rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# Shapes, weights, initial values


def test_shapes_for_the_documented_size_pattern():
    assert reference.output_shape(LAYER, (3, 7, 10)) == (3, 7, 5)
    got = reference.weight_shapes(LAYER, (3, 7, 10))
    want = {"vv_ln/gamma": (5,), "vv_ln/beta": (5,), "vv_dense/kernel": (7, 7), "vv_dense/bias": (7,)}
    assert got == want and list(got) == list(want), f"expected {want}, got {got}"


def test_initial_values_make_a_fresh_block_pass_the_gate_through():
    # The 2021 initial state (bias ones, LayerNorm 1 / 0) with the kernel at its limit 0 (its
    # random initialiser has std 1e-6) multiplies the gate by exactly one.
    specs = reference.weight_specs(LAYER, (2, 3, 4))
    initial = {w.name: w.initial for w in specs}
    assert initial == {"vv_ln/gamma": 1.0, "vv_ln/beta": 0.0, "vv_dense/kernel": None, "vv_dense/bias": 1.0}, initial
    weights = {w.name: w.initial_value() if w.initial is not None else np.zeros(w.shape) for w in specs}
    inputs = np.random.default_rng(4).normal(size=(2, 3, 4))
    np.testing.assert_array_equal(reference.forward(LAYER, inputs, weights=weights), inputs[..., :2])


# --------------------------------------------------------------------------------------------
# Rejections and the sampler


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 4, 5), "spatial_gating_block: inputs channels 5 must be even: the block splits them into a gate half and a gated half"),
        ((2, 3, 1), "spatial_gating_block: inputs channels 1 must be even"),
        ((1, 2, 4, 6), "spatial_gating_block: inputs shape (1, 2, 4, 6) must have rank 3: [batch, tokens, channels]"),
        ((2, 0, 6), "spatial_gating_block: inputs shape (2, 0, 6) must have every dimension >= 1"),
    ],
)
def test_rejection_messages(shape, message):
    with pytest.raises(reference.DomainError) as info:
        reference.validate(LAYER, shape)
    assert str(info.value).startswith(message), f"expected a message starting {message!r}, got {str(info.value)!r}"


class FixedDraw:
    """Answers every integer draw with the low end, the high end, or a value clamped into range."""

    def __init__(self, mode):
        self.mode = mode

    def integer(self, label, low, high):
        if self.mode == "low":
            return low
        if self.mode == "high":
            return high
        return min(max(self.mode, low), high)

    def choice(self, label, options):
        raise AssertionError(f"spatial_gating_block has nothing to choose, asked for {label!r}")

    def real(self, label, low, high):
        raise AssertionError(f"spatial_gating_block has no real to draw, asked for {label!r}")


@pytest.mark.parametrize("mode", ["low", "high", 2, 3])
def test_sampler_gives_even_channels_at_the_ends_of_every_range(mode):
    spec = reference.spec(LAYER)
    draw = FixedDraw(mode)
    (shape,) = spec.sample_input_shapes(spec.draw_config(draw), draw)
    assert shape[-1] % 2 == 0 and shape[-1] >= 2, f"drawn channels {shape[-1]} are not even"
    reference.validate(LAYER, shape)
