"""Self-tests of the reference MHSAWithPositionEmbedding (botnet) against slow formulations.

Each slow formulation is written the obvious way (Python loops, one scalar at a time) so
that it can be checked by reading it; the vectorised reference must agree with it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import reference
from reference import botnet

# Loop and vectorised versions both compute in float64 and differ only in the order of their
# summations, so they agree to a few ulps of O(1) values: 1e-12 leaves a wide margin while
# still catching any wrong index, sign or scale.
RTOL = 1e-12
ATOL = 1e-12

LAYER = "MHSAWithPositionEmbedding"

# (height, width) pairs: square, non-square both ways, and height or width equal to 1.
MAP_SIZES = [(1, 1), (1, 4), (3, 1), (2, 2), (2, 3), (4, 2), (3, 3), (5, 4)]
# The rel_to_abs trick of the 2021 code only works when both sides are at least 2.
TRICK_SIZES = [(h, w) for h, w in MAP_SIZES if h >= 2 and w >= 2] + [(2, 5), (6, 3)]


# --------------------------------------------------------------------------------------------
# Slow formulations


def loop_position_logits(query, r_height, r_width, relative):
    """``[B, heads, H, W, H, W]`` position logits, one scalar at a time."""
    batch, heads, height, width, depth = query.shape
    out = np.zeros((batch, heads, height, width, height, width))
    for b, n, x, y, p, q in itertools.product(
        range(batch), range(heads), range(height), range(width), range(height), range(width)
    ):
        total = 0.0
        for d in range(depth):
            if relative:
                embedding = r_height[d, height - 1 + p - x] + r_width[d, width - 1 + q - y]
            else:
                embedding = r_height[d, p] + r_width[d, q]
            total += query[b, n, x, y, d] * embedding
        out[b, n, x, y, p, q] = total
    return out


def dot(u, v):
    """Plain Python dot product of two equal-length sequences."""
    assert len(u) == len(v), f"dot of lengths {len(u)} and {len(v)}"
    total = 0.0
    for a, b in zip(u, v):
        total += float(a) * float(b)
    return total


def project(vector, matrix):
    """``vector @ matrix`` for a ``(in, out)`` matrix, column by column."""
    return [dot(vector, [matrix[i, o] for i in range(matrix.shape[0])]) for o in range(matrix.shape[1])]


def loop_mhsa(inputs, weights, *, num_heads, key_dim, relative, out_weight, out_bias):
    """MHSAWithPositionEmbedding written out: loops over batch, head and query position,
    an explicit softmax with ``math.exp`` over the keys, an explicit output projection.

    The query is scaled by ``key_dim ** -0.5`` and that scaled query feeds both the content
    logits and the position logits (docs/decisions.md).
    """
    batch, height, width, _ = inputs.shape
    embed = num_heads * key_dim
    scale = 1.0 / math.sqrt(key_dim)
    positions = [(p, q) for p in range(height) for q in range(width)]

    # Projections per position: lists of length `embed`, channel `head * key_dim + d`.
    proj = {
        name: {(b, x, y): project(inputs[b, x, y], weights[name]) for b in range(batch) for x, y in positions}
        for name in ("query", "key", "value")
    }

    heads_out = np.zeros((batch, height, width, embed))
    for b in range(batch):
        for n in range(num_heads):
            channels = range(n * key_dim, (n + 1) * key_dim)
            for x, y in positions:
                query = [proj["query"][b, x, y][c] * scale for c in channels]
                logits = []
                for p, q in positions:
                    key = [proj["key"][b, p, q][c] for c in channels]
                    if relative:
                        table = [
                            weights["r_height"][d, height - 1 + p - x] + weights["r_width"][d, width - 1 + q - y]
                            for d in range(key_dim)
                        ]
                    else:
                        table = [weights["r_height"][d, p] + weights["r_width"][d, q] for d in range(key_dim)]
                    logits.append(dot(query, key) + dot(query, table))
                largest = max(logits)
                exps = [math.exp(logit - largest) for logit in logits]
                total = sum(exps)
                probs = [e / total for e in exps]
                for d, c in enumerate(channels):
                    heads_out[b, x, y, c] = sum(prob * proj["value"][b, p, q][c] for prob, (p, q) in zip(probs, positions))

    if not out_weight and not out_bias:
        return heads_out
    out_channels = weights["output_weight"].shape[1] if out_weight else embed
    out = np.zeros((batch, height, width, out_channels))
    for b in range(batch):
        for x, y in positions:
            row = project(heads_out[b, x, y], weights["output_weight"]) if out_weight else list(heads_out[b, x, y])
            for o in range(out_channels):
                out[b, x, y, o] = row[o] + (weights["output_bias"][o] if out_bias else 0.0)
    return out


def rel_to_abs(logits):
    """The 2021 relative-to-absolute trick, re-derived: ``[..., L, 2L-1]`` -> ``[..., L, L]``.

    Flattening the last two axes puts row ``i`` at offset ``i * (2L-1)``; dropping the first
    ``L-1`` entries and the last one and cutting rows of ``2L-2`` shifts row ``i`` left by
    ``i`` more than row 0, so column ``j`` of row ``i`` lands on column ``L-1+j-i``.
    """
    *lead, length, twice = logits.shape
    assert twice == 2 * length - 1, f"expected last axis 2*{length}-1, got {twice}"
    flat = logits.reshape(*lead, length * twice)
    trimmed = flat[..., length - 1 : -1]
    rows = trimmed.reshape(*lead, length, 2 * length - 2)
    return rows[..., :length]


def trick_relative_logits(query, r_height, r_width):
    """Relative position logits ``[B, heads, H, W, H, W]`` through :func:`rel_to_abs`.

    Width: ``query @ r_width`` is ``[B, heads, H, W, 2W-1]``, converted to key columns.
    Height: transpose the query to ``[B, heads, W, H, d]``, do the same with ``r_height``, and
    transpose the ``[B, heads, W, H, H]`` result back to ``[B, heads, H, W, H]``.
    """
    along_width = rel_to_abs(query @ r_width)  # [B, n, x, y, q]
    along_height = rel_to_abs(query.transpose(0, 1, 3, 2, 4) @ r_height)  # [B, n, y, x, p]
    along_height = along_height.transpose(0, 1, 3, 2, 4)  # [B, n, x, y, p]
    return along_height[:, :, :, :, :, None] + along_width[:, :, :, :, None, :]


# --------------------------------------------------------------------------------------------
# Helpers


def random_tables(rng, key_dim, height, width, relative):
    if relative:
        return rng.normal(size=(key_dim, 2 * height - 1)), rng.normal(size=(key_dim, 2 * width - 1))
    return rng.normal(size=(key_dim, height)), rng.normal(size=(key_dim, width))


def random_mhsa_weights(rng, channels, height, width, *, num_heads, key_dim, relative, out_channels, out_weight, out_bias):
    """Weights with shapes written out here (not read from the spec), at scales that keep
    every logit of order one."""
    embed = num_heads * key_dim
    weights = {name: rng.normal(size=(channels, embed)) / math.sqrt(channels) for name in ("query", "key", "value")}
    if out_weight:
        weights["output_weight"] = rng.normal(size=(embed, out_channels)) / math.sqrt(embed)
    if out_bias:
        weights["output_bias"] = rng.normal(size=(out_channels,))
    r_height, r_width = random_tables(rng, key_dim, height, width, relative)
    weights["r_height"] = r_height / math.sqrt(key_dim)
    weights["r_width"] = r_width / math.sqrt(key_dim)
    return weights


# --------------------------------------------------------------------------------------------
# relative_table and position_logits


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_relative_table_entry_i_j_is_table_column_size_minus_1_plus_j_minus_i(size):
    rng = np.random.default_rng(10 + size)
    table = rng.normal(size=(3, 2 * size - 1))
    expanded = botnet.relative_table(table, size)
    assert expanded.shape == (3, size, size), f"expected shape {(3, size, size)}, got {expanded.shape}"
    for i, j in itertools.product(range(size), range(size)):
        want = table[:, size - 1 + j - i]
        np.testing.assert_array_equal(
            expanded[:, i, j], want, err_msg=f"relative_table[:, {i}, {j}] should be column {size - 1 + j - i}"
        )


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
@pytest.mark.parametrize("height,width", MAP_SIZES, ids=[f"{h}x{w}" for h, w in MAP_SIZES])
def test_position_logits_match_scalar_loop(height, width, relative):
    rng = np.random.default_rng(100 * height + width + (0 if relative else 7))
    query = rng.normal(size=(2, 2, height, width, 3))
    r_height, r_width = random_tables(rng, 3, height, width, relative)
    got = botnet.position_logits(query, r_height, r_width, relative)
    want = loop_position_logits(query, r_height, r_width, relative)
    assert got.shape == want.shape, f"expected shape {want.shape}, got {got.shape}"
    np.testing.assert_allclose(
        got, want, rtol=RTOL, atol=ATOL, err_msg=f"position_logits ({'relative' if relative else 'absolute'}, {height}x{width}) differ from the loop"
    )


def test_absolute_position_logits_equal_the_summed_table_of_the_2021_code():
    # The 2021 code adds the two absolute tables into one (d, H, W) table; same sum.
    rng = np.random.default_rng(5)
    query = rng.normal(size=(1, 2, 3, 4, 5))
    r_height, r_width = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    summed = r_height[:, :, None] + r_width[:, None, :]  # (d, H, W)
    want = np.einsum("bnxyd,dpq->bnxypq", query, summed)
    got = botnet.position_logits(query, r_height, r_width, relative=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg="absolute logits differ from query . (r_height + r_width)")


# --------------------------------------------------------------------------------------------
# The 2021 rel_to_abs trick


@pytest.mark.parametrize("length", [2, 3, 5])
def test_rel_to_abs_rederivation_picks_column_length_minus_1_plus_j_minus_i(length):
    # Checks the test's own helper on a table of distinct integers, so that the comparison
    # with the reference below rests on a helper that is known to do what it says.
    logits = np.arange(2 * 3 * length * (2 * length - 1), dtype=np.float64).reshape(2, 3, length, 2 * length - 1)
    converted = rel_to_abs(logits)
    for i, j in itertools.product(range(length), range(length)):
        np.testing.assert_array_equal(
            converted[..., i, j], logits[..., i, length - 1 + j - i], err_msg=f"rel_to_abs[{i}, {j}] should be column {length - 1 + j - i}"
        )


@pytest.mark.parametrize("height,width", TRICK_SIZES, ids=[f"{h}x{w}" for h, w in TRICK_SIZES])
def test_relative_position_logits_equal_the_2021_rel_to_abs_trick(height, width):
    rng = np.random.default_rng(1000 + 10 * height + width)
    query = rng.normal(size=(2, 3, height, width, 4))
    r_height, r_width = random_tables(rng, 4, height, width, relative=True)
    got = botnet.position_logits(query, r_height, r_width, relative=True)
    want = trick_relative_logits(query, r_height, r_width)
    assert got.shape == want.shape, f"expected shape {want.shape}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"reference relative logits ({height}x{width}) differ from the rel_to_abs trick")


# --------------------------------------------------------------------------------------------
# The whole layer

FORWARD_CASES = [
    # (input shape, config)
    ((2, 3, 4, 5), {"num_heads": 2, "key_dim": 3}),
    ((2, 3, 4, 5), {"num_heads": 2, "key_dim": 3, "relative": False}),
    ((1, 2, 3, 4), {"num_heads": 1, "key_dim": 4, "out_shape": 6, "out_bias": True}),
    ((1, 4, 2, 3), {"num_heads": 3, "key_dim": 2, "relative": False, "out_shape": 5, "out_bias": True}),
    ((2, 2, 3, 3), {"num_heads": 2, "key_dim": 2, "out_weight": False}),
    ((1, 3, 2, 4), {"num_heads": 2, "key_dim": 3, "out_weight": False, "out_bias": True, "relative": False}),
    ((1, 1, 4, 3), {"num_heads": 2, "key_dim": 2}),
    ((1, 3, 1, 2), {"num_heads": 1, "key_dim": 5, "out_bias": True}),
    ((1, 1, 1, 3), {"num_heads": 2, "key_dim": 1, "relative": False}),
    ((1, 2, 2, 3), {"num_heads": 4, "key_dim": 1, "out_shape": 4, "attn_dropout": 0.5}),
]


def _case_id(case):
    shape, config = case
    return "x".join(map(str, shape)) + "-" + ",".join(f"{k}={v}" for k, v in config.items())


def _full_config(config):
    full = {"num_heads": 4, "key_dim": 128, "relative": True, "out_shape": None, "out_weight": True, "out_bias": False}
    full.update(config)
    return full


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[_case_id(c) for c in FORWARD_CASES])
def test_mhsa_forward_matches_loop_formulation(case):
    shape, config = case
    full = _full_config(config)
    batch, height, width, channels = shape
    embed = full["num_heads"] * full["key_dim"]
    out_channels = full["out_shape"] if full["out_weight"] and full["out_shape"] is not None else embed
    rng = np.random.default_rng(sum(shape) * 31 + len(config))
    inputs = rng.normal(size=shape)
    weights = random_mhsa_weights(
        rng,
        channels,
        height,
        width,
        num_heads=full["num_heads"],
        key_dim=full["key_dim"],
        relative=full["relative"],
        out_channels=out_channels,
        out_weight=full["out_weight"],
        out_bias=full["out_bias"],
    )
    got = reference.forward(LAYER, inputs, weights=weights, **config)
    want = loop_mhsa(
        inputs,
        weights,
        num_heads=full["num_heads"],
        key_dim=full["key_dim"],
        relative=full["relative"],
        out_weight=full["out_weight"],
        out_bias=full["out_bias"],
    )
    assert got.shape == (batch, height, width, out_channels), f"expected shape {(batch, height, width, out_channels)}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"forward differs from the loop formulation for {config}")


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_key_dim_scale_applies_to_position_logits(relative):
    # With a zero key projection the content logits vanish, so the attention weights come
    # from the position logits alone: softmax(key_dim ** -0.5 * q . r). An unscaled position
    # term would give visibly different outputs, which the last assertion makes sure of.
    key_dim, height, width, channels = 4, 2, 3, 3
    rng = np.random.default_rng(77 if relative else 78)
    inputs = rng.normal(size=(1, height, width, channels))
    weights = random_mhsa_weights(
        rng, channels, height, width, num_heads=1, key_dim=key_dim, relative=relative, out_channels=key_dim, out_weight=False, out_bias=False
    )
    weights["key"] = np.zeros_like(weights["key"])
    weights["r_height"] = weights["r_height"] * 3.0  # large enough for the scale to matter
    weights["r_width"] = weights["r_width"] * 3.0
    got = reference.forward(LAYER, inputs, weights=weights, num_heads=1, key_dim=key_dim, relative=relative, out_weight=False)

    query = (inputs @ weights["query"]).reshape(1, 1, height, width, key_dim)
    value = (inputs @ weights["value"]).reshape(height * width, key_dim)

    def attend(scale):
        logits = loop_position_logits(query * scale, weights["r_height"], weights["r_width"], relative)
        logits = logits.reshape(height * width, height * width)
        out = np.zeros((height * width, key_dim))
        for i in range(height * width):
            exps = [math.exp(v - max(logits[i])) for v in logits[i]]
            for d in range(key_dim):
                out[i, d] = sum(e * value[j, d] for j, e in enumerate(exps)) / sum(exps)
        return out.reshape(1, height, width, key_dim)

    scaled, unscaled = attend(key_dim**-0.5), attend(1.0)
    np.testing.assert_allclose(got, scaled, rtol=RTOL, atol=ATOL, err_msg="position logits should use the query scaled by key_dim ** -0.5")
    gap = np.max(np.abs(scaled - unscaled))
    assert gap > 1e-3, f"test is not sensitive to the scale: scaled and unscaled outputs differ by only {gap}"


# --------------------------------------------------------------------------------------------
# The README example (numbers copied from docs/attention_layers_README.md)


def test_readme_output_shape():
    got = reference.output_shape(LAYER, (1, 14, 16, 256), num_heads=4, key_dim=128)
    assert got == (1, 14, 16, 512), f"README says (1, 14, 16, 512), reference gives {got}"


def test_readme_weight_shapes():
    got = reference.weight_shapes(LAYER, (1, 14, 16, 256), num_heads=4, key_dim=128)
    readme = {
        "query": (256, 512),
        "key": (256, 512),
        "value": (256, 512),
        "output_weight": (512, 512),
        "r_width": (128, 31),
        "r_height": (128, 27),
    }
    assert got == readme, f"README weights are {readme}, reference gives {got}"
