"""Self-tests of the reference cot_attention (cotnet) against a slow formulation written one
scalar at a time, and of its local aggregation against the 2021 code's reshapes replayed in NumPy."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

import reference
from reference import cotnet

# Loop and vectorised versions both compute in float64 and differ only in summation order (and
# libm versus NumPy for exp), so they agree to a few ulps of O(1) values: 1e-12 leaves a wide
# margin while still catching any wrong index, order or scale.
RTOL = 1e-12
ATOL = 1e-12
LAYER = "cot_attention"

SCALAR_ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: max(v, 0.0),
    "swish": lambda v: v / (1.0 + math.exp(-v)),
    "elu": lambda v: v if v > 0 else math.expm1(v),
}


def random_weights(rng, input_shape, config):
    """Weights at the spec's scales; variances uniform in [0.5, 2]."""
    weights = {}
    for w in reference.weight_specs(LAYER, input_shape, **config):
        weights[w.name] = rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape)
    return weights


# --------------------------------------------------------------------------------------------
# Slow formulation


def loop_cot_attention(x, weights, *, kernel_size, activation):
    """cot_attention one scalar at a time: explicit zero-padding by bounds checks, explicit
    groups, a GroupNorm from ``statistics``, a two-way softmax per channel with ``math.exp``."""
    batch, height, width, channels = x.shape
    k, half = kernel_size, kernel_size // 2
    act = SCALAR_ACTIVATIONS[activation]
    kernels = channels // 8  # local kernels, one per channel class c mod (C / 8)
    positions = list(itertools.product(range(height), range(width)))

    def bn(prefix, value, channel):
        gamma, beta = weights[f"{prefix}bn/gamma"][channel], weights[f"{prefix}bn/beta"][channel]
        mean, variance = weights[f"{prefix}bn/moving_mean"][channel], weights[f"{prefix}bn/moving_variance"][channel]
        return (value - mean) / math.sqrt(variance + 1e-5) * gamma + beta

    def conv1x1(vector, name, out, bias):
        kern = weights[f"{name}/kernel"]
        return [
            sum(vector[i] * kern[0, 0, i, o] for i in range(len(vector))) + (weights[f"{name}/bias"][o] if bias else 0.0)
            for o in range(out)
        ]

    # Key: 4 groups of C/4 channels, k x k taps reading y + dy - k//2.
    per_group = channels // 4
    key = np.zeros((batch, height, width, channels))
    for b, (y, xx), c in itertools.product(range(batch), positions, range(channels)):
        group = c // per_group
        total = 0.0
        for dy, dx, ci in itertools.product(range(k), range(k), range(per_group)):
            row, col = y + dy - half, xx + dx - half
            if 0 <= row < height and 0 <= col < width:
                total += x[b, row, col, group * per_group + ci] * weights["key_conv/kernel"][dy, dx, ci, c]
        key[b, y, xx, c] = act(bn("key_", total, c))

    # Local kernels: [inputs, key] -> C/2 -> k*k * C/8, then GroupNorm over k*k channels x positions.
    taps = k * k * kernels
    raw = np.zeros((batch, height, width, taps))
    for b, (y, xx) in itertools.product(range(batch), positions):
        query_key = list(x[b, y, xx]) + list(key[b, y, xx])
        hidden = [act(bn("embed_ww_1_", v, o)) for o, v in enumerate(conv1x1(query_key, "embed_ww_1_conv", channels // 2, False))]
        raw[b, y, xx] = conv1x1(hidden, "embed_ww_2_conv", taps, True)
    local = np.zeros_like(raw)
    for b, g in itertools.product(range(batch), range(kernels)):
        members = [(y, xx, t) for (y, xx) in positions for t in range(g * k * k, (g + 1) * k * k)]
        values = [raw[b, y, xx, t] for y, xx, t in members]
        mean, variance = statistics.fmean(values), statistics.pvariance(values)
        for y, xx, t in members:
            normalised = (raw[b, y, xx, t] - mean) / math.sqrt(variance + 1e-5)
            local[b, y, xx, t] = normalised * weights["embed_ww_group_norm/gamma"][t] + weights["embed_ww_group_norm/beta"][t]

    value = np.zeros((batch, height, width, channels))
    for b, (y, xx) in itertools.product(range(batch), positions):
        value[b, y, xx] = [bn("embed_1_", v, o) for o, v in enumerate(conv1x1(list(x[b, y, xx]), "embed_1_conv", channels, False))]

    # Local aggregation, element by element: channel c uses kernel c mod (C/8).
    embed = np.zeros((batch, height, width, channels))
    for b, (y, xx), c in itertools.product(range(batch), positions, range(channels)):
        g = c % kernels
        total = 0.0
        for i, j in itertools.product(range(k), range(k)):
            row, col = y + i - half, xx + j - half
            if 0 <= row < height and 0 <= col < width:
                total += value[b, row, col, c] * local[b, y, xx, g * k * k + i * k + j]
        embed[b, y, xx, c] = SCALAR_ACTIVATIONS["swish"](bn("embed_2_", total, c))

    out = np.zeros_like(x)
    hidden_width = weights["attn_se_1_conv/bias"].shape[0]
    for b in range(batch):
        pooled = [sum(embed[b, y, xx, c] + key[b, y, xx, c] for y, xx in positions) / len(positions) for c in range(channels)]
        hidden = [act(bn("attn_se_", v, o)) for o, v in enumerate(conv1x1(pooled, "attn_se_1_conv", hidden_width, True))]
        scores = conv1x1(hidden, "attn_se_2_conv", 2 * channels, True)
        for c in range(channels):
            first, second = math.exp(scores[2 * c]), math.exp(scores[2 * c + 1])
            p_embed, p_key = first / (first + second), second / (first + second)
            for y, xx in positions:
                out[b, y, xx, c] = embed[b, y, xx, c] * p_embed + key[b, y, xx, c] * p_key
    return out


COT_CASES = [
    pytest.param({"kernel_size": 3}, (2, 3, 4, 8), id="k3"),
    pytest.param({"kernel_size": 3, "activation": "swish"}, (1, 2, 3, 16), id="k3-C16-swish"),
    pytest.param({"kernel_size": 1}, (2, 3, 2, 8), id="k1"),
    pytest.param({"kernel_size": 5, "activation": None}, (1, 3, 4, 8), id="k5-no-activation-kernel-beyond-map"),
    pytest.param({"kernel_size": 3, "activation": "elu"}, (2, 1, 1, 8), id="1x1-map"),
    pytest.param({"kernel_size": 3}, (1, 1, 4, 16), id="one-row"),
]


@pytest.mark.parametrize("config, shape", COT_CASES)
def test_cot_attention_matches_loops(config, shape):
    rng = np.random.default_rng(sum(shape) + config["kernel_size"])
    x = rng.normal(size=shape)
    weights = random_weights(rng, shape, config)
    full = reference.validate(LAYER, shape, **config)
    got = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(got, loop_cot_attention(x, weights, **full), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# The local aggregation as the 2021 code wrote it


def tf_style_local_aggregation(value, local_weights, k):
    """The 2021 code's steps: extract k x k patches of the padded value (patch channel
    ``(i*k + j) * C + c``, TensorFlow's order), reshape to ``[..., k*k, 8, C/8]``; reshape the
    kernels to ``[..., C/8, k*k]``, transpose to ``[..., k*k, C/8]`` and insert an axis before the
    last; multiply, sum over the k*k axis, reshape to ``[..., C]``."""
    batch, height, width, channels = value.shape
    half = k // 2
    padded = np.pad(value, ((0, 0), (half, half), (half, half), (0, 0)))
    patches = np.zeros((batch, height, width, k * k * channels))
    for i, j in itertools.product(range(k), range(k)):
        patches[..., (i * k + j) * channels : (i * k + j + 1) * channels] = padded[:, i : i + height, j : j + width, :]
    patches = patches.reshape(batch, height, width, k * k, 8, channels // 8)
    kernels = local_weights.reshape(batch, height, width, channels // 8, k * k).transpose(0, 1, 2, 4, 3)[..., None, :]
    return (patches * kernels).sum(axis=-3).reshape(batch, height, width, channels)


@pytest.mark.parametrize("k, shape", [(1, (2, 2, 3, 8)), (3, (1, 4, 3, 16)), (5, (2, 3, 3, 24)), (3, (1, 1, 1, 8))])
def test_local_aggregation_matches_the_2021_reshapes(k, shape):
    rng = np.random.default_rng(k)
    value = rng.normal(size=shape)
    local_weights = rng.normal(size=(*shape[:3], k * k * shape[3] // 8))
    got = cotnet.local_aggregation(value, local_weights, k)
    np.testing.assert_allclose(got, tf_style_local_aggregation(value, local_weights, k), rtol=RTOL, atol=ATOL)


def test_channels_sharing_a_local_kernel_are_c_mod_c_over_8():
    # One tap of kernel 1 set, everything else 0: exactly the channels c with c mod (C/8) == 1 respond.
    shape, k = (1, 3, 3, 16), 3
    value = np.ones(shape)
    local_weights = np.zeros((1, 3, 3, k * k * 2))
    local_weights[..., 1 * k * k + 4] = 1.0  # kernel 1, centre tap
    out = cotnet.local_aggregation(value, local_weights, k)[0, 1, 1]
    np.testing.assert_array_equal(np.flatnonzero(out), [c for c in range(16) if c % 2 == 1])


def test_final_softmax_pairs_channels_2c_and_2c_plus_1():
    # Force the attention scores through the last bias: a huge score on channel 2c picks embed
    # for c, on 2c + 1 the key; the key is isolated by zeroing the local path's embed_2_bn.
    shape, config = (1, 2, 2, 8), {"kernel_size": 1, "activation": None}
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    weights = random_weights(rng, shape, config)
    weights["embed_2_bn/gamma"][:] = 0.0
    weights["embed_2_bn/beta"][:] = 0.0  # embed = swish(0) = 0
    weights["attn_se_2_conv/kernel"][:] = 0.0
    bias = np.zeros(16)
    bias[1::2] = 50.0  # every channel's second radix: the key
    weights["attn_se_2_conv/bias"] = bias
    out = reference.forward(LAYER, x, weights=weights, **config)
    key = reference.forward(LAYER, x, weights={**weights, "attn_se_2_conv/bias": np.zeros(16)}, **config) * 2.0
    # With zero scores the softmax is 1/2 each and embed is 0, so twice that output is the key.
    np.testing.assert_allclose(out, key, rtol=1e-12, atol=1e-12)
    bias = np.zeros(16)
    bias[0::2] = 50.0  # every channel's first radix: embed, which is 0 here
    np.testing.assert_allclose(reference.forward(LAYER, x, weights={**weights, "attn_se_2_conv/bias": bias}, **config), 0.0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Documented facts, weights and domain


def test_readme_shapes_and_group_norm_layout():
    shapes = reference.weight_shapes(LAYER, (2, 28, 28, 192), kernel_size=3)
    assert shapes["embed_ww_2_conv/kernel"] == (1, 1, 96, 216)  # 9 taps x 24 kernels
    assert shapes["attn_se_1_conv/kernel"] == (1, 1, 192, 96)  # max(2 * 192 // 4, 32)
    assert shapes["attn_se_2_conv/bias"] == (384,)
    small = reference.weight_shapes(LAYER, (1, 3, 3, 8), kernel_size=5)
    assert small["attn_se_1_conv/kernel"] == (1, 1, 8, 32)  # the floor of 32
    assert small["key_conv/kernel"] == (5, 5, 2, 8)
    assert small["embed_ww_group_norm/gamma"] == (25,)
    assert reference.output_shape(LAYER, (2, 28, 28, 192), kernel_size=3) == (2, 28, 28, 192)


def test_group_norm_groups_are_k_squared_contiguous_channels():
    # Shifting one group's pre-norm channels by a constant leaves the output unchanged only if
    # the constant covers that whole group: the GroupNorm removes it. Shifting half a group does not.
    shape, config = (1, 3, 3, 16), {"kernel_size": 3}
    rng = np.random.default_rng(9)
    x = rng.normal(size=shape)
    weights = random_weights(rng, shape, config)
    base = reference.forward(LAYER, x, weights=weights, **config)
    whole = weights["embed_ww_2_conv/bias"].copy()
    whole[9:18] += 3.0  # group 1 = channels 9..17
    np.testing.assert_allclose(reference.forward(LAYER, x, weights={**weights, "embed_ww_2_conv/bias": whole}, **config), base, rtol=1e-9, atol=1e-9)
    straddling = weights["embed_ww_2_conv/bias"].copy()
    straddling[5:14] += 3.0
    moved = reference.forward(LAYER, x, weights={**weights, "embed_ww_2_conv/bias": straddling}, **config)
    assert np.max(np.abs(moved - base)) > 1e-3


def test_batch_norm_and_group_norm_initial_values():
    specs = {w.name: w for w in reference.weight_specs(LAYER, (1, 3, 3, 8), kernel_size=3)}
    for prefix in ("key_", "embed_ww_1_", "embed_1_", "embed_2_", "attn_se_"):
        for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0)):
            assert specs[f"{prefix}bn/{name}"].initial == value, f"{prefix}bn/{name}"
    assert specs["embed_ww_group_norm/gamma"].initial == 1.0 and specs["embed_ww_group_norm/beta"].initial == 0.0
    assert all(specs[n].initial is None for n in specs if "_conv/" in n), "conv kernels and biases have random initial values"


@pytest.mark.parametrize(
    "config, shape, fragment",
    [
        ({"kernel_size": 4}, (1, 4, 4, 16), "cot_attention: kernel_size 4 must be odd"),
        ({"kernel_size": 2}, (1, 4, 4, 16), "cot_attention: kernel_size 2 must be odd"),
        ({"kernel_size": -1}, (1, 4, 4, 16), "cot_attention: kernel_size -1 must be >= 1"),
        ({}, (1, 4, 4, 20), "cot_attention: channels 20 is not a multiple of 8"),
        ({"activation": "mish"}, (1, 4, 4, 16), "cot_attention: activation 'mish' must be one of"),
        ({}, (4, 4, 16), "cot_attention: inputs shape (4, 4, 16) must have rank 4"),
    ],
)
def test_rejections(config, shape, fragment):
    with pytest.raises(reference.DomainError) as info:
        reference.validate(LAYER, shape, **config)
    assert fragment in str(info.value), f"expected {fragment!r}, got {str(info.value)!r}"


def test_even_kernel_is_rejected_without_a_shape():
    with pytest.raises(reference.DomainError, match="kernel_size 6 must be odd"):
        reference.spec(LAYER).normalize_config({"kernel_size": 6})
