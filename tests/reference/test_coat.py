"""Self-tests of the reference coat layers (ConvPositionalEncoding, ConvRelativePositionalEncoding,
layer_norm) against slow formulations.

Each slow formulation is written the obvious way (Python loops, one scalar at a time, token
indices computed by hand), independently of the reference's helpers, so that it can be checked
by reading it; the vectorised reference must agree with it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import reference
from reference import _sampling, coat

# Loop and vectorised versions both compute in float64 and differ only in the order of their
# summations, so they agree to a few ulps of O(1) values: 1e-12 leaves a wide margin while
# still catching any wrong index, sign or scale.
RTOL = 1e-12
ATOL = 1e-12

CPE = "ConvPositionalEncoding"
CRPE = "ConvRelativePositionalEncoding"
LN = "layer_norm"


# --------------------------------------------------------------------------------------------
# Slow formulations


def token_of(y: int, x: int, side: int) -> int:
    """Grid pixel (row y, column x) sits at token 1 + y * side + x; token 0 is the class token."""
    return 1 + y * side + x


def square_side(tokens: int) -> int:
    side = 0
    while (side + 1) * (side + 1) <= tokens - 1:
        side += 1
    assert side * side == tokens - 1, f"{tokens} tokens are not a class token plus a square grid"
    return side


def loop_conv_at(read, kernel, bias_value, channel, y, x, side):
    """``bias + sum_{i, j} kernel[i, j, channel, 0] * read(y + i - p, x + j - p)`` over the
    pixels inside the ``side x side`` grid (outside pixels are zero padding), ``p = k // 2``."""
    k = kernel.shape[0]
    p = k // 2
    total = float(bias_value)
    for i in range(k):
        for j in range(k):
            row, col = y + i - p, x + j - p
            if 0 <= row < side and 0 <= col < side:
                total += float(kernel[i, j, channel, 0]) * float(read(row, col))
    return total


def loop_cpe(inputs, kernel, bias):
    batch, tokens, channels = inputs.shape
    side = square_side(tokens)
    out = np.full(inputs.shape, np.nan)
    for b in range(batch):
        for c in range(channels):
            out[b, 0, c] = inputs[b, 0, c]
            for y, x in itertools.product(range(side), range(side)):
                convolved = loop_conv_at(lambda r, q: inputs[b, token_of(r, q, side), c], kernel, bias[c], c, y, x, side)
                out[b, token_of(y, x, side), c] = inputs[b, token_of(y, x, side), c] + convolved
    return out


def loop_crpe(query, value, weights, head_splits):
    batch, heads, tokens, depth = query.shape
    side = square_side(tokens)
    out = np.full(query.shape, np.nan)
    for b, h, j in itertools.product(range(batch), range(heads), range(depth)):
        # The group of head h and the first head of that group.
        group, start = 0, 0
        while h >= start + head_splits[group]:
            start += head_splits[group]
            group += 1
        kernel = weights[f"depth_conv_{group + 1}/depthwise_kernel"]
        bias = weights[f"depth_conv_{group + 1}/bias"]
        local = (h - start) * depth + j
        out[b, h, 0, j] = 0.0
        for y, x in itertools.product(range(side), range(side)):
            convolved = loop_conv_at(lambda r, q: value[b, h, token_of(r, q, side), j], kernel, bias[local], local, y, x, side)
            out[b, h, token_of(y, x, side), j] = query[b, h, token_of(y, x, side), j] * convolved
    return out


def loop_layer_norm(inputs, gamma, beta, epsilon):
    channels = inputs.shape[-1]
    rows = inputs.reshape(-1, channels)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        mean = sum(float(v) for v in row) / channels
        variance = sum((float(v) - mean) ** 2 for v in row) / channels
        for c in range(channels):
            out[r, c] = (row[c] - mean) / math.sqrt(variance + epsilon) * gamma[c] + beta[c]
    return out.reshape(inputs.shape)


# --------------------------------------------------------------------------------------------
# Helpers


def random_cpe_weights(rng, kernel_size, channels):
    return {
        "depthwise_kernel": rng.normal(size=(kernel_size, kernel_size, channels, 1)) / kernel_size,
        "bias": rng.normal(size=(channels,)),
    }


def random_crpe_weights(rng, head_splits, head_kernel_size, depth):
    weights = {}
    for index, (split, k) in enumerate(zip(head_splits, head_kernel_size), start=1):
        weights[f"depth_conv_{index}/depthwise_kernel"] = rng.normal(size=(k, k, split * depth, 1)) / k
        weights[f"depth_conv_{index}/bias"] = rng.normal(size=(split * depth,))
    return weights


def message_of(call) -> str:
    with pytest.raises(reference.DomainError) as info:
        call()
    return str(info.value)


# --------------------------------------------------------------------------------------------
# The grid rule shared by both encodings


@pytest.mark.parametrize("tokens", range(0, 40))
def test_grid_side_accepts_exactly_a_class_token_plus_a_positive_square(tokens):
    squares = {side * side + 1: side for side in range(1, 7)}
    if tokens in squares:
        assert coat.grid_side(CPE, tokens) == squares[tokens], f"{tokens} tokens should make a {squares[tokens]}-wide grid"
    else:
        message = message_of(lambda: coat.grid_side(CPE, tokens))
        assert message == (
            f"{CPE}: image tokens (tokens - 1) {tokens - 1} must be a positive square number: "
            "token 0 is the class token and the others form a square grid"
        ), message


# --------------------------------------------------------------------------------------------
# ConvPositionalEncoding

CPE_CASES = [
    # (input shape, kernel_size): grids of side 1 to 4, kernels smaller than, equal to and larger than the grid.
    ((2, 10, 3), 3),
    ((1, 10, 2), 5),
    ((3, 2, 4), 3),
    ((1, 5, 3), 1),
    ((2, 17, 2), 3),
    ((1, 17, 1), 7),
    ((2, 5, 5), 5),
]


@pytest.mark.parametrize("shape,kernel_size", CPE_CASES, ids=[f"{'x'.join(map(str, s))}-k{k}" for s, k in CPE_CASES])
def test_cpe_forward_matches_loop(shape, kernel_size):
    rng = np.random.default_rng(sum(shape) * 7 + kernel_size)
    inputs = rng.normal(size=shape)
    weights = random_cpe_weights(rng, kernel_size, shape[-1])
    got = reference.forward(CPE, inputs, weights=weights, kernel_size=kernel_size)
    want = loop_cpe(inputs, weights["depthwise_kernel"], weights["bias"])
    assert got.shape == shape, f"expected shape {shape}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"CPE {shape} k={kernel_size} differs from the loop")


def test_cpe_class_token_passes_through_bit_for_bit():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(2, 10, 3)) * 1e3
    weights = random_cpe_weights(rng, 3, 3)
    got = reference.forward(CPE, inputs, weights=weights)
    np.testing.assert_array_equal(got[:, 0], inputs[:, 0], err_msg="the class token must be returned unchanged")
    assert not np.allclose(got[:, 1:], inputs[:, 1:]), "the grid tokens should change (the test would not notice otherwise)"


def test_cpe_with_a_zero_kernel_adds_only_the_bias():
    inputs = np.arange(2 * 10 * 3, dtype=np.float64).reshape(2, 10, 3)
    weights = {"depthwise_kernel": np.zeros((3, 3, 3, 1)), "bias": np.array([1.0, -2.0, 0.5])}
    got = reference.forward(CPE, inputs, weights=weights)
    want = inputs.copy()
    want[:, 1:] += weights["bias"]
    np.testing.assert_array_equal(got, want, err_msg="zero kernel: grid tokens + bias, class token unchanged")


def test_cpe_grid_is_row_major_and_padded_with_zeros():
    # A one-hot kernel tap at (row 0, col 1) of a 3x3 kernel reads the pixel one row up:
    # out(y, x) = in(y, x) + in(y - 1, x), and the top row reads the zero padding.
    side = 3
    inputs = np.zeros((1, side * side + 1, 1))
    inputs[0, 1:, 0] = np.arange(1, side * side + 1)  # pixel (y, x) holds 1 + y * side + x
    kernel = np.zeros((3, 3, 1, 1))
    kernel[0, 1, 0, 0] = 1.0
    got = reference.forward(CPE, inputs, weights={"depthwise_kernel": kernel, "bias": np.zeros(1)})
    for y, x in itertools.product(range(side), range(side)):
        above = 1 + (y - 1) * side + x if y > 0 else 0
        want = (1 + y * side + x) + above
        assert got[0, token_of(y, x, side), 0] == want, f"pixel ({y}, {x}): expected {want}, got {got[0, token_of(y, x, side), 0]}"


# --------------------------------------------------------------------------------------------
# ConvRelativePositionalEncoding

CRPE_CASES = [
    # (query/value shape, head_splits, head_kernel_size)
    ((2, 4, 10, 3), [1, 2, 1], [3, 1, 5]),
    ((1, 8, 10, 2), [2, 3, 3], [3, 5, 7]),
    ((1, 2, 5, 2), [2], [3]),
    ((3, 3, 2, 1), [1, 2], [1, 3]),
    ((1, 5, 17, 2), [3, 2], [5, 3]),
    ((2, 1, 17, 4), [1], [1]),
]


@pytest.mark.parametrize("shape,splits,kernels", CRPE_CASES, ids=[f"{'x'.join(map(str, s))}-{sp}-{k}" for s, sp, k in CRPE_CASES])
def test_crpe_forward_matches_loop(shape, splits, kernels):
    rng = np.random.default_rng(sum(shape) * 13 + sum(kernels))
    query, value = rng.normal(size=shape), rng.normal(size=shape)
    weights = random_crpe_weights(rng, splits, kernels, shape[-1])
    got = reference.forward(CRPE, query, value, weights=weights, head_splits=splits, head_kernel_size=kernels)
    want = loop_crpe(query, value, weights, splits)
    assert got.shape == shape, f"expected shape {shape}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"CRPE {shape} {splits} {kernels} differs from the loop")


def test_crpe_class_token_row_is_exactly_zero():
    rng = np.random.default_rng(4)
    shape = (2, 8, 10, 2)
    query, value = rng.normal(size=shape) + 5.0, rng.normal(size=shape) + 5.0
    weights = random_crpe_weights(rng, [2, 3, 3], [3, 5, 7], 2)
    got = reference.forward(CRPE, query, value, weights=weights)
    np.testing.assert_array_equal(got[:, :, 0], np.zeros((2, 8, 2)), err_msg="row 0 (class token) must be zero")
    assert np.all(got[:, :, 1:] != 0), "grid rows should be non-zero here (the test would not notice otherwise)"


def test_crpe_channel_of_head_h_component_j_in_its_group_is_h_minus_start_times_d_plus_j():
    # 1x1 kernels holding their own local channel index, ones for query and value, zero bias:
    # every output element reads back the group-local channel that convolved it.
    splits, depth = [2, 1, 3], 2
    heads = sum(splits)
    weights = {}
    for index, split in enumerate(splits, start=1):
        weights[f"depth_conv_{index}/depthwise_kernel"] = np.arange(split * depth, dtype=np.float64).reshape(1, 1, -1, 1) + 100 * index
        weights[f"depth_conv_{index}/bias"] = np.zeros(split * depth)
    ones = np.ones((1, heads, 5, depth))
    got = reference.forward(CRPE, ones, ones, weights=weights, head_splits=splits, head_kernel_size=[1, 1, 1])
    starts = [0, 2, 3]  # first head of each group, written out
    for h, j in itertools.product(range(heads), range(depth)):
        group = 0 if h < 2 else 1 if h < 3 else 2
        want = 100 * (group + 1) + (h - starts[group]) * depth + j
        np.testing.assert_array_equal(got[0, h, 1:, j], np.full(4, want), err_msg=f"head {h}, component {j} should use group {group + 1} channel {want % 100}")


def test_crpe_each_group_convolves_with_its_own_kernel_size():
    # A single non-zero value pixel at the grid centre; all-ones kernels. A head of a k x k
    # group sees it from every pixel within k // 2 rows and columns, and nowhere else.
    splits, kernels, side, depth = [1, 1, 1], [1, 3, 5], 5, 1
    tokens = side * side + 1
    value = np.zeros((1, 3, tokens, depth))
    value[0, :, token_of(2, 2, side), 0] = 1.0
    query = np.ones_like(value)
    weights = {}
    for index, k in enumerate(kernels, start=1):
        weights[f"depth_conv_{index}/depthwise_kernel"] = np.ones((k, k, depth, 1))
        weights[f"depth_conv_{index}/bias"] = np.zeros(depth)
    got = reference.forward(CRPE, query, value, weights=weights, head_splits=splits, head_kernel_size=kernels)
    for h, k in enumerate(kernels):
        for y, x in itertools.product(range(side), range(side)):
            reach = max(abs(y - 2), abs(x - 2)) <= k // 2
            assert got[0, h, token_of(y, x, side), 0] == (1.0 if reach else 0.0), f"head {h} (kernel {k}) at ({y}, {x})"


def test_crpe_multiplies_by_the_query_elementwise():
    rng = np.random.default_rng(8)
    shape = (1, 3, 10, 2)
    value = rng.normal(size=shape)
    weights = random_crpe_weights(rng, [1, 2], [3, 1], 2)
    config = {"head_splits": [1, 2], "head_kernel_size": [3, 1]}
    base = reference.forward(CRPE, np.ones(shape), value, weights=weights, **config)
    query = rng.normal(size=shape)
    got = reference.forward(CRPE, query, value, weights=weights, **config)
    np.testing.assert_allclose(got[:, :, 1:], query[:, :, 1:] * base[:, :, 1:], rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# layer_norm

LN_SHAPES = [(3, 7), (2, 5, 6), (2, 3, 4, 5), (1, 1, 1), (2, 4, 1), (1, 2, 3, 2)]


@pytest.mark.parametrize("shape", LN_SHAPES, ids=["x".join(map(str, s)) for s in LN_SHAPES])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e2])
def test_layer_norm_matches_loop_with_epsilon_1e_6(shape, scale):
    rng = np.random.default_rng(sum(shape) + int(math.log10(scale)) + 10)
    inputs = rng.normal(size=shape) * scale
    gamma, beta = rng.normal(size=shape[-1]), rng.normal(size=shape[-1])
    got = reference.forward(LN, inputs, weights={"ln/gamma": gamma, "ln/beta": beta})
    want = loop_layer_norm(inputs, gamma, beta, 1e-6)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"layer_norm {shape} at scale {scale} differs from the loop")


@pytest.mark.parametrize("scale,min_gap", [(1e-3, 0.1), (1.0, 1e-7)])
def test_layer_norm_epsilon_1e_6_is_distinguishable_from_1e_5_in_float64(scale, min_gap):
    rng = np.random.default_rng(21)
    inputs = rng.normal(size=(2, 6, 8)) * scale
    gamma, beta = np.ones(8), np.zeros(8)
    got = reference.forward(LN, inputs, weights={"ln/gamma": gamma, "ln/beta": beta})
    with_1e_6 = loop_layer_norm(inputs, gamma, beta, 1e-6)
    with_1e_5 = loop_layer_norm(inputs, gamma, beta, 1e-5)
    np.testing.assert_allclose(got, with_1e_6, rtol=RTOL, atol=ATOL, err_msg="layer_norm should use epsilon 1e-6")
    gap = np.max(np.abs(got - with_1e_5))
    assert gap > min_gap, f"at scale {scale} epsilon 1e-5 differs by only {gap}: the test would not tell them apart"
    assert gap > 1e3 * ATOL, f"the gap {gap} must be far above the comparison tolerance {ATOL}"


def test_layer_norm_normalises_the_last_axis_of_a_feature_map():
    # Each pixel's channels are normalised on their own: constant shifts per pixel vanish.
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(1, 2, 3, 4))
    shifted = inputs + rng.normal(size=(1, 2, 3, 1)) * 10
    weights = {"ln/gamma": np.ones(4), "ln/beta": np.zeros(4)}
    np.testing.assert_allclose(
        reference.forward(LN, shifted, weights=weights), reference.forward(LN, inputs, weights=weights), rtol=1e-10, atol=1e-10
    )


def test_layer_norm_initial_values_are_gamma_1_beta_0():
    specs = {w.name: w for w in reference.weight_specs(LN, (2, 5, 6))}
    assert list(specs) == ["ln/gamma", "ln/beta"], list(specs)
    np.testing.assert_array_equal(specs["ln/gamma"].initial_value(), np.ones(6))
    np.testing.assert_array_equal(specs["ln/beta"].initial_value(), np.zeros(6))
    assert not specs["ln/gamma"].fixed and not specs["ln/beta"].fixed, "gamma and beta are trainable"


def test_layer_norm_has_no_epsilon_parameter_like_the_2021_signature():
    assert reference.spec(LN).params == (), "layer_norm(inputs, name=None) takes no config"
    message = message_of(lambda: reference.validate(LN, (2, 5, 6), epsilon=1e-5))
    assert "unknown config parameter 'epsilon'" in message, message


# --------------------------------------------------------------------------------------------
# Shapes and weights


def test_documented_weights_and_output_shapes():
    assert reference.weight_shapes(CPE, (1, 197, 256)) == {"depthwise_kernel": (3, 3, 256, 1), "bias": (256,)}
    assert reference.output_shape(CPE, (1, 197, 256)) == (1, 197, 256)
    assert reference.weight_shapes(CRPE, (1, 8, 197, 6), (1, 8, 197, 6)) == {
        "depth_conv_1/depthwise_kernel": (3, 3, 12, 1),
        "depth_conv_1/bias": (12,),
        "depth_conv_2/depthwise_kernel": (5, 5, 18, 1),
        "depth_conv_2/bias": (18,),
        "depth_conv_3/depthwise_kernel": (7, 7, 18, 1),
        "depth_conv_3/bias": (18,),
    }
    assert reference.output_shape(CRPE, (1, 8, 197, 6), (1, 8, 197, 6)) == (1, 8, 197, 6)
    assert reference.weight_shapes(LN, (2, 197, 256)) == {"ln/gamma": (256,), "ln/beta": (256,)}
    assert reference.output_shape(LN, (2, 197, 256)) == (2, 197, 256)


def test_crpe_weights_follow_the_splits_in_order():
    got = reference.weight_shapes(CRPE, (2, 4, 10, 3), (2, 4, 10, 3), head_splits=[1, 2, 1], head_kernel_size=[3, 1, 5])
    assert list(got.items()) == [
        ("depth_conv_1/depthwise_kernel", (3, 3, 3, 1)),
        ("depth_conv_1/bias", (3,)),
        ("depth_conv_2/depthwise_kernel", (1, 1, 6, 1)),
        ("depth_conv_2/bias", (6,)),
        ("depth_conv_3/depthwise_kernel", (5, 5, 3, 1)),
        ("depth_conv_3/bias", (3,)),
    ], got


def test_depthwise_kernels_are_drawn_at_std_1_over_k():
    specs = {w.name: w for w in reference.weight_specs(CRPE, (1, 8, 10, 2), (1, 8, 10, 2))}
    for index, k in enumerate([3, 5, 7], start=1):
        assert specs[f"depth_conv_{index}/depthwise_kernel"].std == pytest.approx(1 / k), "fan-in of a depthwise tap sum is k * k"
    assert {w.name: w.std for w in reference.weight_specs(CPE, (1, 10, 4), kernel_size=5)}["depthwise_kernel"] == pytest.approx(0.2)


def test_list_parameters_normalise_tuples_to_lists():
    full = reference.validate(CRPE, (1, 3, 5, 2), (1, 3, 5, 2), head_splits=(1, 2), head_kernel_size=(3, np.int64(5)))
    assert full == {"head_splits": [1, 2], "head_kernel_size": [3, 5]}, full
    assert type(full["head_kernel_size"][1]) is int


# --------------------------------------------------------------------------------------------
# Rejections (the exact messages)

FULL_MESSAGES = [
    (CPE, {}, ((1, 11, 4),), "ConvPositionalEncoding: image tokens (tokens - 1) 10 must be a positive square number: token 0 is the class token and the others form a square grid"),
    (CPE, {"kernel_size": 4}, ((1, 10, 4),), "ConvPositionalEncoding: kernel_size 4 must hold odd kernel sizes: 4 is even, and its kernel_size // 2 zeros on each side would grow the grid"),
    (CPE, {"kernel_size": True}, ((1, 10, 4),), "ConvPositionalEncoding: kernel_size True must be an integer"),
    (
        CRPE,
        {"head_splits": [2, 3], "head_kernel_size": [3, 5, 7]},
        ((1, 5, 10, 2), (1, 5, 10, 2)),
        "ConvRelativePositionalEncoding: head_kernel_size [3, 5, 7] must have one kernel size per head split: 3 kernel sizes for 2 splits (the 2021 zip silently dropped the extras)",
    ),
    (
        CRPE,
        {},
        ((1, 4, 10, 2), (1, 4, 10, 2)),
        "ConvRelativePositionalEncoding: head_splits [2, 3, 3] must sum to the number of heads, 4 (axis 1 of the query (1, 4, 10, 2))",
    ),
    (CRPE, {}, ((1, 8, 10, 2), (1, 8, 5, 2)), "ConvRelativePositionalEncoding: value shape (1, 8, 5, 2) must equal the query shape (1, 8, 10, 2)"),
    (CRPE, {}, ((1, 8, 6, 2), (1, 8, 6, 2)), "ConvRelativePositionalEncoding: image tokens (tokens - 1) 5 must be a positive square number"),
    (
        CRPE,
        {"head_kernel_size": [3, 5, 6]},
        ((1, 8, 10, 2), (1, 8, 10, 2)),
        "ConvRelativePositionalEncoding: head_kernel_size [3, 5, 6] must hold odd kernel sizes: 6 is even",
    ),
    (CRPE, {"head_splits": [2, "3", 3]}, ((1, 8, 10, 2), (1, 8, 10, 2)), "ConvRelativePositionalEncoding: head_splits [2, '3', 3] must be a non-empty list of integers >= 1: '3' is not an integer"),
    (CRPE, {"head_splits": [2, True, 3]}, ((1, 6, 10, 2), (1, 6, 10, 2)), "head_splits [2, True, 3] must be a non-empty list of integers >= 1: True is not an integer"),
    (CRPE, {"head_splits": "233"}, ((1, 8, 10, 2), (1, 8, 10, 2)), "ConvRelativePositionalEncoding: head_splits '233' must be a non-empty list of integers >= 1"),
    (LN, {}, ((6,),), "layer_norm: inputs shape (6,) must have rank 2, 3 or 4"),
]


@pytest.mark.parametrize("layer,config,shapes,message", FULL_MESSAGES, ids=[f"{m[0]}-{i}" for i, m in enumerate(FULL_MESSAGES)])
def test_rejection_messages(layer, config, shapes, message):
    got = message_of(lambda: reference.validate(layer, *shapes, **config))
    assert message in got, f"expected {message!r}, got {got!r}"
    assert got.startswith(f"{layer}: "), got


@pytest.mark.parametrize("layer", [CPE, CRPE, LN])
def test_every_documented_rejection_raises_its_message(layer):
    spec = reference.spec(layer)
    assert spec.rejections, f"{layer} documents no rejections"
    for rejection in spec.rejections:
        got = message_of(lambda: reference.validate(layer, *rejection.input_shapes, **rejection.config))
        assert rejection.message in got and got.startswith(f"{layer}: "), f"{rejection}: got {got!r}"


# --------------------------------------------------------------------------------------------
# Sampling: any answer within the asked ranges gives a valid config and shapes


@pytest.mark.parametrize("edge", _sampling.EDGE_DRAWS, ids=[e.name for e in _sampling.EDGE_DRAWS])
@pytest.mark.parametrize("layer", [CPE, CRPE, LN])
def test_samplers_stay_in_the_domain_for_edge_answers(layer, edge):
    spec = reference.spec(layer)
    draw = edge.fresh()
    config = spec.draw_config(draw)
    shapes = spec.sample_input_shapes(config, draw)
    full = reference.validate(layer, *shapes, **config)
    assert all(full[key] == value for key, value in config.items()), f"validate changed {config} into {full}"
    weights = {k: np.ones(v) for k, v in reference.weight_shapes(layer, *shapes, **config).items()}
    out = reference.forward(layer, *[np.ones(s) for s in shapes], weights=weights, **config)
    assert out.shape == reference.output_shape(layer, *shapes, **config)


def test_smallest_answers_reach_one_head_a_1x1_grid_kernel_1_and_batch_1():
    draw = next(e for e in _sampling.EDGE_DRAWS if e.name == "smallest").fresh()
    config = reference.spec(CRPE).draw_config(draw)
    shapes = reference.spec(CRPE).sample_input_shapes(config, draw)
    assert config == {"head_splits": [1], "head_kernel_size": [1]}, config
    assert shapes == ((1, 1, 2, 1), (1, 1, 2, 1)), shapes


def test_every_size_2_gives_two_groups_of_two_heads_and_a_2x2_grid():
    draw = next(e for e in _sampling.EDGE_DRAWS if e.name == "every size 2").fresh()
    config = reference.spec(CRPE).draw_config(draw)
    shapes = reference.spec(CRPE).sample_input_shapes(config, draw)
    assert config == {"head_splits": [2, 2], "head_kernel_size": [5, 5]}, config
    assert shapes == ((2, 4, 5, 2), (2, 4, 5, 2)), shapes
