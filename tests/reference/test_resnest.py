"""Self-tests of the reference rsoftmax and split_attention_conv2d (resnest) against slow
formulations written one scalar at a time with Python loops and the ``math`` module."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import reference
from reference import _ops

# Loop and vectorised versions both compute in float64 and differ only in summation order (and
# libm versus NumPy for exp), so they agree to a few ulps of O(1) values: 1e-12 leaves a wide
# margin while still catching any wrong index, order or scale.
RTOL = 1e-12
ATOL = 1e-12

SCALAR_ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: max(v, 0.0),
    "swish": lambda v: v / (1.0 + math.exp(-v)),
    "tanh": math.tanh,
}


def scalar_sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def random_weights(rng, layer, input_shape, config):
    """Weights at the spec's scales; variances uniform in [0.5, 2]."""
    weights = {}
    for w in reference.weight_specs(layer, input_shape, **config):
        weights[w.name] = rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape)
    return weights


# --------------------------------------------------------------------------------------------
# rsoftmax


def loop_rsoftmax(x, groups):
    """Sigmoid for one group; otherwise for every column c the softmax over the radices r of
    channels ``r * (C // groups) + c``."""
    batch, _, _, channels = x.shape
    out = np.zeros_like(x)
    if groups == 1:
        for b, c in itertools.product(range(batch), range(channels)):
            out[b, 0, 0, c] = scalar_sigmoid(x[b, 0, 0, c])
        return out
    width = channels // groups
    for b, column in itertools.product(range(batch), range(width)):
        members = [r * width + column for r in range(groups)]
        largest = max(x[b, 0, 0, m] for m in members)
        exps = [math.exp(x[b, 0, 0, m] - largest) for m in members]
        for m, e in zip(members, exps):
            out[b, 0, 0, m] = e / sum(exps)
    return out


@pytest.mark.parametrize("groups, shape", [(1, (2, 1, 1, 5)), (2, (2, 1, 1, 98)), (3, (1, 1, 1, 12)), (4, (3, 1, 1, 4)), (2, (1, 1, 1, 2))])
def test_rsoftmax_matches_loops(groups, shape):
    x = np.random.default_rng(groups).normal(0.0, 2.0, shape)
    got = reference.forward("rsoftmax", x, weights={}, groups=groups)
    np.testing.assert_allclose(got, loop_rsoftmax(x, groups), rtol=RTOL, atol=ATOL)


def test_two_radix_rsoftmax_is_the_general_softmax_at_special_values():
    # groups == 2 takes one exp per column instead of two; it must give what the general
    # softmax path gives, NaN pattern included, on ties, infinities, NaN and overflowing
    # differences. Both paths call NumPy's exp on the same arguments, but NumPy may use another
    # exp kernel for arrays of another length on AVX-512 machines, hence 1 ulp, not bit equality.
    first = [np.inf, -np.inf, np.nan, 3.0, 1e308, -np.inf, np.inf, 0.0, -0.0, 2.5, -700.0, 1e-300]
    second = [1.0, -np.inf, 0.0, 3.0, -1e308, 2.0, np.inf, -0.0, 0.0, -40.0, 700.0, -1e-300]
    rng = np.random.default_rng(7)
    x = np.concatenate([first, rng.normal(0.0, 3.0, 20), second, rng.normal(0.0, 3.0, 20)]).reshape(1, 1, 1, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        got = reference.forward("rsoftmax", x, weights={}, groups=2)
        want = _ops.softmax(x.reshape(1, 2, -1).copy(), axis=1).reshape(x.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"NaN at {np.flatnonzero(np.isnan(got))}, softmax has NaN at {np.flatnonzero(np.isnan(want))}"
    finite = ~np.isnan(want)
    np.testing.assert_array_max_ulp(got[finite], want[finite], maxulp=1)
    # Answers known without computing: a tie halves, -inf loses to a finite logit, a difference
    # past exp's range gives exactly 0 and 1, and +inf or NaN in a column gives NaN (inf - inf).
    width = x.shape[-1] // 2
    pairs = {3: (0.5, 0.5), 4: (1.0, 0.0), 5: (0.0, 1.0), 7: (0.5, 0.5), 8: (0.5, 0.5), 10: (0.0, 1.0)}
    for column, (p_first, p_second) in pairs.items():
        assert (got[0, 0, 0, column], got[0, 0, 0, width + column]) == (p_first, p_second), column
    for column in (0, 1, 2, 6):
        assert np.isnan(got[0, 0, 0, column]) and np.isnan(got[0, 0, 0, width + column]), column


def test_rsoftmax_softmax_runs_across_groups_not_within_them():
    # Raising one channel only lowers the other members of its column, never its neighbours.
    x = np.zeros((1, 1, 1, 6))
    x[0, 0, 0, 1] = 5.0
    out = reference.forward("rsoftmax", x, weights={}, groups=2)[0, 0, 0]
    column_share = math.exp(5.0) / (math.exp(5.0) + 1.0)
    np.testing.assert_allclose(out, [0.5, column_share, 0.5, 0.5, 1.0 - column_share, 0.5], rtol=RTOL, atol=ATOL)
    sums = out.reshape(2, 3).sum(axis=0)
    np.testing.assert_allclose(sums, np.ones(3), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "groups, shape, fragment",
    [
        (3, (2, 1, 1, 8), "rsoftmax: channels 8 is not a multiple of groups 3"),
        (2, (2, 3, 3, 8), "rsoftmax: inputs shape (2, 3, 3, 8) must be [batch, 1, 1, channels]"),
        (1, (2, 2, 1, 8), "rsoftmax: inputs shape (2, 2, 1, 8) must be [batch, 1, 1, channels]"),
        (0, (2, 1, 1, 8), "rsoftmax: groups 0 must be >= 1"),
    ],
)
def test_rsoftmax_rejections(groups, shape, fragment):
    with pytest.raises(reference.DomainError) as info:
        reference.validate("rsoftmax", shape, groups=groups)
    assert fragment in str(info.value), f"expected {fragment!r}, got {str(info.value)!r}"


def test_rsoftmax_groups_has_no_default():
    with pytest.raises(reference.DomainError, match="'groups' is required"):
        reference.validate("rsoftmax", (1, 1, 1, 4))


# --------------------------------------------------------------------------------------------
# split_attention_conv2d


def loop_split_attention(x, weights, *, filters, kernel_size, strides, groups, activation):
    """split_attention_conv2d one scalar at a time.

    The convolution reads the input at ``y * strides + dy - kernel_size // 2`` and treats
    positions outside the map as zeros; group i sees input channels
    ``[i * C/g, (i + 1) * C/g)`` through its own kernel and writes logits channels
    ``[i * filters, (i + 1) * filters)``.
    """
    batch, height, width, channels = x.shape
    act = SCALAR_ACTIVATIONS[activation]
    half = kernel_size // 2
    out_h = (height + 2 * half - kernel_size) // strides + 1
    out_w = (width + 2 * half - kernel_size) // strides + 1
    per_group = channels // groups

    def bn(prefix, value, channel):
        gamma, beta = weights[f"{prefix}bn/gamma"][channel], weights[f"{prefix}bn/beta"][channel]
        mean, variance = weights[f"{prefix}bn/moving_mean"][channel], weights[f"{prefix}bn/moving_variance"][channel]
        return (value - mean) / math.sqrt(variance + 1e-5) * gamma + beta

    logits = np.zeros((batch, out_h, out_w, groups * filters))
    for b, y, xx, i, f in itertools.product(range(batch), range(out_h), range(out_w), range(groups), range(filters)):
        kern = weights["1_conv/kernel"] if groups == 1 else weights[f"1_g{i + 1}_conv/kernel"]
        total = 0.0
        for dy, dx, ci in itertools.product(range(kernel_size), range(kernel_size), range(per_group)):
            row, col = y * strides + dy - half, xx * strides + dx - half
            if 0 <= row < height and 0 <= col < width:
                total += x[b, row, col, i * per_group + ci] * kern[dy, dx, ci, f]
        channel = i * filters + f
        logits[b, y, xx, channel] = act(bn("1_", total, channel))

    inner = weights["2_conv/bias"].shape[0]
    out = np.zeros((batch, out_h, out_w, filters))
    for b in range(batch):
        gap = []
        for f in range(filters):
            total = 0.0
            for y, xx, i in itertools.product(range(out_h), range(out_w), range(groups)):
                total += logits[b, y, xx, i * filters + f]
            gap.append(total / (out_h * out_w))
        hidden = []
        for o in range(inner):
            value = weights["2_conv/bias"][o] + sum(gap[f] * weights["2_conv/kernel"][0, 0, f, o] for f in range(filters))
            hidden.append(act(bn("2_", value, o)))
        scores = [
            weights["3_conv/bias"][o] + sum(hidden[h] * weights["3_conv/kernel"][0, 0, h, o] for h in range(inner))
            for o in range(groups * filters)
        ]
        for f in range(filters):
            members = [i * filters + f for i in range(groups)]
            if groups == 1:
                probs = [scalar_sigmoid(scores[f])]
            else:
                exps = [math.exp(scores[m]) for m in members]
                probs = [e / sum(exps) for e in exps]
            for y, xx in itertools.product(range(out_h), range(out_w)):
                out[b, y, xx, f] = sum(p * logits[b, y, xx, m] for p, m in zip(probs, members))
    return out


SPLIT_CASES = [
    pytest.param({"filters": 3}, (2, 4, 5, 4), id="default-g2-k3"),
    pytest.param({"filters": 2, "groups": 1, "activation": "swish"}, (1, 3, 3, 3), id="g1-swish"),
    pytest.param({"filters": 2, "groups": 3, "strides": 2}, (2, 5, 7, 6), id="g3-stride2-odd"),
    pytest.param({"filters": 2, "kernel_size": 2, "strides": 2, "groups": 2}, (1, 5, 4, 4), id="k2-stride2-grows"),
    pytest.param({"filters": 3, "kernel_size": 4, "groups": 2, "activation": None}, (1, 3, 2, 2), id="k4-no-activation"),
    pytest.param({"filters": 2, "kernel_size": 5, "groups": 2, "activation": "tanh"}, (2, 1, 1, 2), id="1x1-map-k5"),
    pytest.param({"filters": 2, "kernel_size": 1, "strides": 3, "groups": 2}, (1, 4, 5, 2), id="k1-stride3"),
]


@pytest.mark.parametrize("config, shape", SPLIT_CASES)
def test_split_attention_matches_loops(config, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape)
    weights = random_weights(rng, "split_attention_conv2d", shape, config)
    full = reference.validate("split_attention_conv2d", shape, **config)
    got = reference.forward("split_attention_conv2d", x, weights=weights, **config)
    want = loop_split_attention(x, weights, **full)
    assert got.shape == want.shape, f"expected shape {want.shape}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shape, config, out",
    [
        ((1, 7, 6, 4), {"filters": 3, "strides": 2}, (1, 4, 3, 3)),  # (7 + 2 - 3) // 2 + 1 = 4
        ((1, 5, 5, 4), {"filters": 3, "kernel_size": 2}, (1, 6, 6, 3)),  # even kernels grow the map
        ((1, 5, 5, 4), {"filters": 3, "kernel_size": 4, "strides": 2}, (1, 3, 3, 3)),
        ((2, 1, 1, 2), {"filters": 5, "kernel_size": 5}, (2, 1, 1, 5)),
    ],
)
def test_split_attention_output_shape(shape, config, out):
    assert reference.output_shape("split_attention_conv2d", shape, **config) == out


def test_split_attention_weight_names_and_inner_width():
    # groups 1: one `1_conv`; inner width max(C * g // 4, 32): 32 for small C, C * g // 4 above.
    shapes = reference.weight_shapes("split_attention_conv2d", (1, 4, 4, 6), filters=5, groups=1)
    assert list(shapes)[0] == "1_conv/kernel" and shapes["1_conv/kernel"] == (3, 3, 6, 5)
    assert not any("_g" in name for name in shapes), shapes
    assert shapes["2_conv/kernel"] == (1, 1, 5, 32)
    shapes = reference.weight_shapes("split_attention_conv2d", (1, 4, 4, 66), filters=4, groups=3)
    assert [n for n in shapes if n.endswith("_conv/kernel")][:3] == ["1_g1_conv/kernel", "1_g2_conv/kernel", "1_g3_conv/kernel"]
    assert shapes["1_g3_conv/kernel"] == (3, 3, 22, 4)
    assert shapes["2_conv/kernel"] == (1, 1, 4, 49)  # 66 * 3 // 4 = 49
    assert shapes["3_conv/kernel"] == (1, 1, 49, 12)


def test_split_attention_declares_batch_norm_initial_values():
    specs = {w.name: w for w in reference.weight_specs("split_attention_conv2d", (1, 4, 4, 4), filters=3)}
    for prefix, size in (("1_", 6), ("2_", 32)):
        for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0)):
            weight = specs[f"{prefix}bn/{name}"]
            np.testing.assert_array_equal(weight.initial_value(), np.full(size, value), err_msg=weight.name)
        assert specs[f"{prefix}bn/moving_variance"].positive
    assert specs["1_g1_conv/kernel"].initial is None and specs["2_conv/bias"].initial is None


@pytest.mark.parametrize(
    "config, shape, fragment",
    [
        ({"filters": 4, "groups": 3}, (1, 4, 4, 8), "split_attention_conv2d: channels 8 is not a multiple of groups 3"),
        ({"filters": 4, "kernel_size": 0}, (1, 4, 4, 8), "split_attention_conv2d: kernel_size 0 must be >= 1"),
        ({"filters": 4, "strides": 0}, (1, 4, 4, 8), "split_attention_conv2d: strides 0 must be >= 1"),
        ({"filters": 4, "activation": "mish"}, (1, 4, 4, 8), "split_attention_conv2d: activation 'mish' must be one of"),
        ({"filters": 2.0}, (1, 4, 4, 8), "split_attention_conv2d: filters 2.0 must be an integer"),
        ({}, (1, 4, 4, 8), "split_attention_conv2d: config parameter 'filters' is required"),
    ],
)
def test_split_attention_rejections(config, shape, fragment):
    with pytest.raises(reference.DomainError) as info:
        reference.validate("split_attention_conv2d", shape, **config)
    assert fragment in str(info.value), f"expected {fragment!r}, got {str(info.value)!r}"
