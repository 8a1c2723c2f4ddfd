"""Self-tests of the reference mixer_block (and the mlp_block declaration it nests) against
token-by-token loops written with Python scalars and the ``math`` module."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from reference import _ops

# Loops and the vectorised reference both compute in float64 and differ only in summation
# order (and libm versus NumPy for exp/tanh), a few ulps of O(1) values.
RTOL = 1e-12
ATOL = 1e-12

SCALAR_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: x if x > 0 else 0.0,
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "swish": lambda x: x / (1.0 + math.exp(-x)),
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "tanh": math.tanh,
    "elu": lambda x: x if x > 0 else math.expm1(x),
    "softplus": lambda x: math.log1p(math.exp(x)),
}


# --------------------------------------------------------------------------------------------
# Loop formulations


def loop_layer_norm_token(values, gamma, beta, epsilon):
    """LayerNorm of one token's channel values (a Python list), biased variance."""
    count = len(values)
    mean = sum(values) / count
    variance = sum((v - mean) ** 2 for v in values) / count
    scale = 1.0 / math.sqrt(variance + epsilon)
    return [(v - mean) * scale * float(g) + float(b) for v, g, b in zip(values, gamma, beta)]


def loop_mlp(vector, kernel_0, bias_0, kernel_1, bias_1, act):
    """``Dense_1(act(Dense_0(vector)))`` on a Python list with explicit dot products."""
    hidden = [act(float(bias_0[h]) + sum(vector[i] * float(kernel_0[i, h]) for i in range(len(vector)))) for h in range(kernel_0.shape[1])]
    return [float(bias_1[o]) + sum(hidden[h] * float(kernel_1[h, o]) for h in range(len(hidden))) for o in range(kernel_1.shape[1])]


def loop_mixer_block(inputs, weights, act, epsilon=1e-5):
    batch, tokens, channels = inputs.shape
    w = weights
    out = np.zeros(inputs.shape)
    for b in range(batch):
        normalised = [loop_layer_norm_token([float(v) for v in inputs[b, n]], w["LayerNorm_0/gamma"], w["LayerNorm_0/beta"], epsilon) for n in range(tokens)]
        # Token mixing: for each channel, the column of its N token values goes through the MLP.
        mixed = [[0.0] * channels for _ in range(tokens)]
        for c in range(channels):
            column = [normalised[n][c] for n in range(tokens)]
            result = loop_mlp(
                column,
                w["token_mixing/Dense_0/kernel"],
                w["token_mixing/Dense_0/bias"],
                w["token_mixing/Dense_1/kernel"],
                w["token_mixing/Dense_1/bias"],
                act,
            )
            for n in range(tokens):
                mixed[n][c] = result[n]
        for n in range(tokens):
            token_out = [float(inputs[b, n, c]) + mixed[n][c] for c in range(channels)]
            normalised_1 = loop_layer_norm_token(token_out, w["LayerNorm_1/gamma"], w["LayerNorm_1/beta"], epsilon)
            channel_mixed = loop_mlp(
                normalised_1,
                w["channel_mixing/Dense_0/kernel"],
                w["channel_mixing/Dense_0/bias"],
                w["channel_mixing/Dense_1/kernel"],
                w["channel_mixing/Dense_1/bias"],
                act,
            )
            for c in range(channels):
                out[b, n, c] = token_out[c] + channel_mixed[c]
    return out


def random_mixer_weights(rng, tokens, channels, tokens_mlp_dim, channels_mlp_dim):
    def mlp(prefix, width, hidden):
        return {
            f"{prefix}Dense_0/kernel": rng.normal(size=(width, hidden)) / math.sqrt(width),
            f"{prefix}Dense_0/bias": rng.normal(size=hidden),
            f"{prefix}Dense_1/kernel": rng.normal(size=(hidden, width)) / math.sqrt(hidden),
            f"{prefix}Dense_1/bias": rng.normal(size=width),
        }

    return {
        "LayerNorm_0/gamma": rng.normal(size=channels),
        "LayerNorm_0/beta": rng.normal(size=channels),
        **mlp("token_mixing/", tokens, tokens_mlp_dim),
        "LayerNorm_1/gamma": rng.normal(size=channels),
        "LayerNorm_1/beta": rng.normal(size=channels),
        **mlp("channel_mixing/", channels, channels_mlp_dim),
    }


# --------------------------------------------------------------------------------------------
# mixer_block against the loops

MIXER_CASES = [
    # shape, tokens_mlp_dim, channels_mlp_dim
    ((2, 5, 4), 3, 6),
    ((1, 3, 7), 6, 2),
    ((3, 4, 4), 5, 5),  # tokens == channels: a swapped transpose would still run
    ((2, 1, 3), 2, 1),  # one token
    ((1, 6, 2), 1, 4),
]


def _case_id(case):
    shape, t, c = case
    return f"{'x'.join(map(str, shape))}-t{t}-c{c}"


@pytest.mark.parametrize("shape, tokens_mlp_dim, channels_mlp_dim", MIXER_CASES, ids=[_case_id(c) for c in MIXER_CASES])
def test_mixer_block_matches_token_loop(shape, tokens_mlp_dim, channels_mlp_dim):
    rng = np.random.default_rng(sum(shape) * 7 + tokens_mlp_dim + 10 * channels_mlp_dim)
    inputs = rng.normal(size=shape)
    weights = random_mixer_weights(rng, shape[1], shape[2], tokens_mlp_dim, channels_mlp_dim)
    got = reference.forward("mixer_block", inputs, weights=weights, tokens_mlp_dim=tokens_mlp_dim, channels_mlp_dim=channels_mlp_dim)
    want = loop_mixer_block(inputs, weights, SCALAR_ACTIVATIONS["gelu"])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"mixer_block {shape} differs from the token loop")


@pytest.mark.parametrize("name", sorted(SCALAR_ACTIVATIONS))
def test_mixer_block_with_each_activation_matches_token_loop(name):
    shape = (2, 3, 4)
    rng = np.random.default_rng(50 + sorted(SCALAR_ACTIVATIONS).index(name))
    inputs = rng.normal(size=shape) * 3.0
    weights = random_mixer_weights(rng, 3, 4, 4, 5)
    # Wide LayerNorm scales so the hidden values reach relu6's upper clip.
    for key in ("LayerNorm_0/gamma", "LayerNorm_1/gamma"):
        weights[key] = weights[key] * 4.0
    got = reference.forward("mixer_block", inputs, weights=weights, tokens_mlp_dim=4, channels_mlp_dim=5, activation=name)
    want = loop_mixer_block(inputs, weights, SCALAR_ACTIVATIONS[name])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"mixer_block with activation {name!r} differs from the loop")


def test_mixer_block_uses_layer_norm_epsilon_1e_5_not_1e_6():
    # Inputs of variance ~1e-6 per token: the epsilon dominates the denominator, so 1e-5 and
    # 1e-6 give outputs far apart in float64 (not a rounding-level difference).
    shape = (2, 4, 5)
    rng = np.random.default_rng(60)
    inputs = rng.normal(size=shape) * 1e-3
    weights = random_mixer_weights(rng, 4, 5, 3, 3)
    got = reference.forward("mixer_block", inputs, weights=weights, tokens_mlp_dim=3, channels_mlp_dim=3)
    with_1e_5 = loop_mixer_block(inputs, weights, SCALAR_ACTIVATIONS["gelu"], epsilon=1e-5)
    with_1e_6 = loop_mixer_block(inputs, weights, SCALAR_ACTIVATIONS["gelu"], epsilon=1e-6)
    np.testing.assert_allclose(got, with_1e_5, rtol=RTOL, atol=ATOL, err_msg="mixer_block at small variance differs from the epsilon 1e-5 loop")
    gap = np.max(np.abs(with_1e_5 - with_1e_6))
    assert gap > 1e-2, f"the test inputs should separate epsilon 1e-5 from 1e-6, outputs differ by only {gap:.3g}"


def test_mixer_block_token_mixing_mixes_tokens_not_channels():
    # Only the token branch is live (channel_mixing returns 0), and LayerNorm_0 passes only
    # channel 1 (gamma 0 elsewhere). Changing one token's input must then move channel 1 in
    # every token (token mixing) and leave the other channels' branch output alone.
    shape = (1, 4, 3)
    rng = np.random.default_rng(70)
    inputs = rng.normal(size=shape)
    weights = random_mixer_weights(rng, 4, 3, 5, 2)
    weights["channel_mixing/Dense_1/kernel"][:] = 0.0
    weights["channel_mixing/Dense_1/bias"][:] = 0.0
    weights["LayerNorm_0/gamma"][:] = [0.0, 1.5, 0.0]
    weights["LayerNorm_0/beta"][:] = 0.0
    config = {"tokens_mlp_dim": 5, "channels_mlp_dim": 2}
    before = reference.forward("mixer_block", inputs, weights=weights, **config) - inputs
    moved = inputs.copy()
    moved[0, 2, 0] += 0.7
    after = reference.forward("mixer_block", moved, weights=weights, **config) - moved
    change = np.abs(after - before)[0]
    assert np.all(change[:, 1] > 1e-6), f"channel 1 of every token should move, changes {change[:, 1]}"
    # Only the residual's rounding may differ there: (x + t) - x is t to within an ulp of x.
    assert np.all(change[:, [0, 2]] < 1e-14), f"channels with gamma 0 must not move under token mixing, changes {change[:, [0, 2]]}"


def test_mixer_block_drop_rate_is_inactive_at_inference():
    shape = (2, 3, 4)
    rng = np.random.default_rng(80)
    inputs = rng.normal(size=shape)
    weights = random_mixer_weights(rng, 3, 4, 2, 3)
    outputs = [reference.forward("mixer_block", inputs, weights=weights, tokens_mlp_dim=2, channels_mlp_dim=3, drop_rate=rate) for rate in (0, 0.5, 0.9)]
    for rate, out in zip((0.5, 0.9), outputs[1:]):
        np.testing.assert_array_equal(out, outputs[0], err_msg=f"drop_rate={rate} changed the inference output")


def test_mixer_block_with_one_channel_normalises_to_beta():
    # LayerNorm over a single channel gives exactly beta: the token branch sees a constant.
    shape = (2, 4, 1)
    rng = np.random.default_rng(90)
    inputs = rng.normal(size=shape)
    weights = random_mixer_weights(rng, 4, 1, 3, 2)
    got = reference.forward("mixer_block", inputs, weights=weights, tokens_mlp_dim=3, channels_mlp_dim=2)
    want = loop_mixer_block(inputs, weights, SCALAR_ACTIVATIONS["gelu"])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg="mixer_block with one channel differs from the loop")


# --------------------------------------------------------------------------------------------
# Shapes, weights, initial values


def test_mixer_block_weight_shapes_follow_tokens_and_channels():
    got = reference.weight_shapes("mixer_block", (3, 7, 5), tokens_mlp_dim=4, channels_mlp_dim=6)
    want = {
        "LayerNorm_0/gamma": (5,),
        "LayerNorm_0/beta": (5,),
        "token_mixing/Dense_0/kernel": (7, 4),
        "token_mixing/Dense_0/bias": (4,),
        "token_mixing/Dense_1/kernel": (4, 7),
        "token_mixing/Dense_1/bias": (7,),
        "LayerNorm_1/gamma": (5,),
        "LayerNorm_1/beta": (5,),
        "channel_mixing/Dense_0/kernel": (5, 6),
        "channel_mixing/Dense_0/bias": (6,),
        "channel_mixing/Dense_1/kernel": (6, 5),
        "channel_mixing/Dense_1/bias": (5,),
    }
    assert got == want and list(got) == list(want), f"expected {want}, got {got}"
    assert reference.output_shape("mixer_block", (3, 7, 5), tokens_mlp_dim=4, channels_mlp_dim=6) == (3, 7, 5)


def test_mixer_block_declares_layer_norm_initial_values_only():
    declared = {w.name: w.initial for w in reference.weight_specs("mixer_block", (1, 3, 4), tokens_mlp_dim=2, channels_mlp_dim=2)}
    for prefix in ("LayerNorm_0/", "LayerNorm_1/"):
        assert declared.pop(f"{prefix}gamma") == 1.0 and declared.pop(f"{prefix}beta") == 0.0, f"{prefix}: expected gamma 1, beta 0"
    assert all(value is None for value in declared.values()), f"Dense weights have random initialisers, got {declared}"


def test_mixer_block_kernels_are_drawn_at_one_over_sqrt_fan_in():
    stds = {w.name: w.std for w in reference.weight_specs("mixer_block", (1, 9, 4), tokens_mlp_dim=16, channels_mlp_dim=25)}
    assert stds["token_mixing/Dense_0/kernel"] == pytest.approx(1 / 3)
    assert stds["token_mixing/Dense_1/kernel"] == pytest.approx(1 / 4)
    assert stds["channel_mixing/Dense_0/kernel"] == pytest.approx(1 / 2)
    assert stds["channel_mixing/Dense_1/kernel"] == pytest.approx(1 / 5)


# --------------------------------------------------------------------------------------------
# Rejections, in full


@pytest.mark.parametrize(
    "config, shape, message",
    [
        ({"channels_mlp_dim": 2}, (1, 4, 3), "mixer_block: config parameter 'tokens_mlp_dim' is required (integer >= 1)"),
        ({"tokens_mlp_dim": -2, "channels_mlp_dim": 2}, (1, 4, 3), "mixer_block: tokens_mlp_dim -2 must be >= 1"),
        ({"tokens_mlp_dim": True, "channels_mlp_dim": 2}, (1, 4, 3), "mixer_block: tokens_mlp_dim True must be an integer"),
        ({"tokens_mlp_dim": 2, "channels_mlp_dim": 2, "drop_rate": 1}, (1, 4, 3), "mixer_block: drop_rate 1.0 must be a finite real in [0.0, 1.0)"),
        ({"tokens_mlp_dim": 2, "channels_mlp_dim": 2, "activation": "GELU"}, (1, 4, 3), "mixer_block: activation 'GELU' must be one of 'linear'"),
        ({"tokens_mlp_dim": 2, "channels_mlp_dim": 2}, (4, 3), "mixer_block: inputs shape (4, 3) must have rank 3: [batch, tokens, channels]"),
    ],
)
def test_mixer_block_rejection_messages(config, shape, message):
    with pytest.raises(reference.DomainError) as info:
        reference.validate("mixer_block", shape, **config)
    assert str(info.value).startswith(message), f"expected a message starting {message!r}, got {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# The samplers stay in the domain for any answer in the asked ranges


class FixedDraw:
    """Answers every draw the same way: the low end, the high end, or a fixed value (an index for
    choices, a tenth of it for reals) clamped into range."""

    def __init__(self, mode):
        self.mode = mode

    def _pick(self, low, high, fixed):
        if self.mode == "low":
            return low
        if self.mode == "high":
            return high
        return min(max(fixed, low), high)

    def integer(self, label, low, high):
        return self._pick(low, high, self.mode if isinstance(self.mode, int) else low)

    def choice(self, label, options):
        options = tuple(options)
        return options[self._pick(0, len(options) - 1, self.mode if isinstance(self.mode, int) else 0)]

    def real(self, label, low, high):
        return self._pick(low, high, self.mode / 10 if isinstance(self.mode, int) else low)


@pytest.mark.parametrize("layer", ["mlp_block", "mixer_block"])
@pytest.mark.parametrize("mode", ["low", "high", 2, 3])
def test_samplers_stay_in_the_domain_at_the_ends_of_every_range(layer, mode):
    spec = reference.spec(layer)
    draw = FixedDraw(mode)
    config = spec.draw_config(draw)
    shapes = spec.sample_input_shapes(config, draw)
    reference.validate(layer, *shapes, **config)
    assert all(isinstance(d, int) for shape in shapes for d in shape), f"{layer}: drawn shapes {shapes} are not ints"


@pytest.mark.parametrize("layer", ["mlp_block", "mixer_block"])
def test_samplers_draw_every_activation(layer):
    seen = set()
    for index in range(len(_ops.ACTIVATIONS)):
        seen.add(reference.spec(layer).draw_config(FixedDraw(index))["activation"])
    assert seen == set(_ops.ACTIVATIONS), f"{layer}: activations drawn {sorted(seen)}, expected all of {sorted(_ops.ACTIVATIONS)}"


def test_mixer_block_loop_helper_is_not_vacuous():
    # The loops must themselves tell a transposed token MLP from a channel MLP: swapping the
    # roles (N == C, with distinct weights) changes the loop's result.
    rng = np.random.default_rng(100)
    inputs = rng.normal(size=(1, 3, 3))
    weights = random_mixer_weights(rng, 3, 3, 2, 2)
    swapped = dict(weights)
    for part in ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias"):
        swapped[f"token_mixing/{part}"], swapped[f"channel_mixing/{part}"] = weights[f"channel_mixing/{part}"], weights[f"token_mixing/{part}"]
    gelu = SCALAR_ACTIVATIONS["gelu"]
    assert not np.allclose(loop_mixer_block(inputs, weights, gelu), loop_mixer_block(inputs, swapped, gelu))

