"""Self-tests of the reference HaloAttention (halonet) against slow formulations.

Two independent oracles: a loop formulation that walks every query pixel, its window and its
keys one scalar at a time (readable against the spec's docstring), and a NumPy re-derivation of
the 2021 code's data path (reshapes, patch extraction, split, rel-to-abs trick), which pins the
channel orders and the relative index to what the 2021 layer computed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import reference
from reference import halonet
from reference._sampling import EDGE_DRAWS

# Loop and vectorised versions both compute in float64 and differ only in summation order, so
# they agree to a few ulps of O(1) values; 1e-12 still catches any wrong index, sign or scale.
RTOL = 1e-12
ATOL = 1e-12

LAYER = "HaloAttention"


# --------------------------------------------------------------------------------------------
# Slow formulations


def dot(u, v):
    assert len(u) == len(v), f"dot of lengths {len(u)} and {len(v)}"
    total = 0.0
    for a, b in zip(u, v):
        total += float(a) * float(b)
    return total


def project(vector, matrix):
    """``vector @ matrix`` for an ``(in, out)`` matrix, column by column."""
    return [dot(vector, [matrix[i, o] for i in range(matrix.shape[0])]) for o in range(matrix.shape[1])]


def loop_windows(projected, block_size, halo_size):
    """``[B, rows, cols, win, win, C]``: for each block, each window cell looked up by hand."""
    batch, height, width, channels = projected.shape
    window = block_size + 2 * halo_size
    rows, cols = height // block_size, width // block_size
    out = np.full((batch, rows, cols, window, window, channels), np.nan)
    for b, r, c, u, v in itertools.product(range(batch), range(rows), range(cols), range(window), range(window)):
        pixel_row, pixel_col = r * block_size - halo_size + u, c * block_size - halo_size + v
        inside = 0 <= pixel_row < height and 0 <= pixel_col < width
        out[b, r, c, u, v] = projected[b, pixel_row, pixel_col] if inside else 0.0
    return out


def loop_position_logits(query, r_height, r_width, window):
    """``[..., b, b, win, win]`` for a blocked query ``[..., b, b, d]``, one scalar at a time."""
    *lead, block_size, _, depth = query.shape
    out = np.zeros((*lead, block_size, block_size, window, window))
    for index in itertools.product(*(range(n) for n in lead)):
        for x, y, u, v in itertools.product(range(block_size), range(block_size), range(window), range(window)):
            out[index + (x, y, u, v)] = sum(
                query[index + (x, y, d)] * (r_height[d, window - 1 + u - x] + r_width[d, window - 1 + v - y]) for d in range(depth)
            )
    return out


def loop_halo_attention(inputs, weights, *, num_heads, key_dim, block_size, halo_size, out_weight, out_bias):
    """HaloAttention written out for every query pixel: find its block and window, look up each
    window pixel (zero off the map), compute each key's logit, an explicit softmax with
    ``math.exp``, the weighted sum of values, then the explicit output projection."""
    batch, height, width, _ = inputs.shape
    embed = num_heads * key_dim
    window = block_size + 2 * halo_size
    scale = 1.0 / math.sqrt(key_dim)
    pixels = list(itertools.product(range(height), range(width)))
    key_value = {(b, p, q): project(inputs[b, p, q], weights["key_value"]) for b in range(batch) for p, q in pixels}
    off_map = [0.0] * (2 * embed)

    heads_out = np.zeros((batch, height, width, embed))
    for b, (row, col) in itertools.product(range(batch), pixels):
        query_all = project(inputs[b, row, col], weights["query"])
        x, y = row % block_size, col % block_size  # the query's place inside its block
        top, left = row - x - halo_size, col - y - halo_size  # the window's first pixel
        for n in range(num_heads):
            query = [query_all[n * key_dim + d] * scale for d in range(key_dim)]
            logits, values = [], []
            for u, v in itertools.product(range(window), range(window)):
                pixel = (top + u, left + v)
                kv = key_value[(b, *pixel)] if 0 <= pixel[0] < height and 0 <= pixel[1] < width else off_map
                key = [kv[n * 2 * key_dim + d] for d in range(key_dim)]
                position = [
                    weights["r_height"][d, window - 1 + u - x] + weights["r_width"][d, window - 1 + v - y] for d in range(key_dim)
                ]
                logits.append(dot(query, key) + dot(query, position))
                values.append([kv[n * 2 * key_dim + key_dim + d] for d in range(key_dim)])
            largest = max(logits)
            exps = [math.exp(logit - largest) for logit in logits]
            total = sum(exps)
            for d in range(key_dim):
                heads_out[b, row, col, n * key_dim + d] = sum(e / total * value[d] for e, value in zip(exps, values))

    if not out_weight and not out_bias:
        return heads_out
    out_channels = weights["output_weight"].shape[1] if out_weight else embed
    out = np.zeros((batch, height, width, out_channels))
    for b, (row, col) in itertools.product(range(batch), pixels):
        projected = project(heads_out[b, row, col], weights["output_weight"]) if out_weight else list(heads_out[b, row, col])
        for o in range(out_channels):
            out[b, row, col, o] = projected[o] + (weights["output_bias"][o] if out_bias else 0.0)
    return out


# --------------------------------------------------------------------------------------------
# The 2021 data path, re-derived in NumPy


def patches_2021(images, size, stride):
    """TensorFlow's VALID ``extract_patches``: each patch flattened as (row, column, channel)."""
    batch, height, width, channels = images.shape
    out_rows, out_cols = (height - size) // stride + 1, (width - size) // stride + 1
    out = np.zeros((batch, out_rows, out_cols, size * size * channels))
    for r, c in itertools.product(range(out_rows), range(out_cols)):
        out[:, r, c] = images[:, r * stride : r * stride + size, c * stride : c * stride + size, :].reshape(batch, -1)
    return out


def rel_to_abs_2021(logits):
    """The 2021 rel-to-abs reshape on ``[B, N, rows, cols, 2*win - 1]``, ``cols`` queries per
    row: flatten each row's ``cols`` logit vectors, drop the first ``cols - 1`` entries and the
    last, cut rows of ``2*win - 2`` and keep ``win`` entries from ``win - cols`` on."""
    _, heads, rows, cols, twice = logits.shape
    window = (twice + 1) // 2
    gap = window - cols
    flat = logits.reshape(-1, heads, rows, cols * twice)[..., cols - 1 : -1]
    return flat.reshape(-1, heads, rows, cols, 2 * (window - 1))[..., gap : window + gap]


def halo_attention_2021(inputs, weights, *, num_heads, key_dim, block_size, halo_size):
    """The 2021 layer's call (before its output projection): every reshape, transpose and
    split in its order, the patches from :func:`patches_2021`, the position logits through
    :func:`rel_to_abs_2021`."""
    batch, height, width, _ = inputs.shape
    window = block_size + 2 * halo_size
    rows, cols = height // block_size, width // block_size

    query = inputs @ weights["query"] * (1.0 / math.sqrt(key_dim))
    query = query.reshape(batch, rows, block_size, cols, block_size, num_heads, key_dim).transpose(0, 5, 1, 3, 2, 4, 6)
    attention_query = query.reshape(batch, num_heads, rows, cols, block_size * block_size, key_dim)
    position_query = query.reshape(batch, num_heads * rows * cols, block_size, block_size, key_dim)

    key_value = inputs @ weights["key_value"]
    padded = np.pad(key_value, ((0, 0), (halo_size, halo_size), (halo_size, halo_size), (0, 0)))
    patches = patches_2021(padded, window, block_size)
    patches = patches.reshape(batch, rows, cols, window, window, num_heads, -1).transpose(0, 5, 1, 2, 3, 4, 6)
    patches = patches.reshape(batch, num_heads, rows, cols, window * window, -1)
    key, value = np.split(patches, 2, axis=-1)

    scores = attention_query @ key.swapaxes(-1, -2)
    along_width = rel_to_abs_2021(position_query @ weights["r_width"])
    along_height = rel_to_abs_2021(position_query.transpose(0, 1, 3, 2, 4) @ weights["r_height"]).transpose(0, 1, 3, 2, 4)
    position = along_width[..., None, :] + along_height[..., :, None]
    scores = scores + position.reshape(scores.shape)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    attended = scores / scores.sum(axis=-1, keepdims=True) @ value

    attended = attended.reshape(batch, num_heads, rows, cols, block_size, block_size, key_dim).transpose(0, 2, 4, 3, 5, 1, 6)
    return attended.reshape(batch, height, width, num_heads * key_dim)


# --------------------------------------------------------------------------------------------
# Helpers


def random_weights(rng, channels, *, num_heads, key_dim, block_size, halo_size, out_channels, out_weight, out_bias):
    """Weights with shapes written out here (not read from the spec), at scales that keep
    every logit of order one."""
    embed, window = num_heads * key_dim, block_size + 2 * halo_size
    weights = {
        "query": rng.normal(size=(channels, embed)) / math.sqrt(channels),
        "key_value": rng.normal(size=(channels, 2 * embed)) / math.sqrt(channels),
        "r_width": rng.normal(size=(key_dim, 2 * window - 1)) / math.sqrt(key_dim),
        "r_height": rng.normal(size=(key_dim, 2 * window - 1)) / math.sqrt(key_dim),
    }
    if out_weight:
        weights["output_weight"] = rng.normal(size=(embed, out_channels)) / math.sqrt(embed)
    if out_bias:
        weights["output_bias"] = rng.normal(size=(out_channels,))
    return weights


DEFAULTS = {"num_heads": 4, "key_dim": 128, "block_size": 2, "halo_size": 1, "out_shape": None, "out_weight": True, "out_bias": False}


def case_arrays(shape, config, seed):
    """Full config, inputs and weights for a case; the output width follows the spec's rule."""
    full = {**DEFAULTS, **config}
    embed = full["num_heads"] * full["key_dim"]
    out_channels = full["out_shape"] if full["out_weight"] and full["out_shape"] is not None else embed
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=shape)
    weights = random_weights(
        rng,
        shape[-1],
        num_heads=full["num_heads"],
        key_dim=full["key_dim"],
        block_size=full["block_size"],
        halo_size=full["halo_size"],
        out_channels=out_channels,
        out_weight=full["out_weight"],
        out_bias=full["out_bias"],
    )
    return full, out_channels, inputs, weights


# (block_size, halo_size, height, width): halo 0, halo below, equal to and above the block,
# block 1, one block, several blocks, non-square both ways.
WINDOW_CASES = [(1, 0, 2, 3), (1, 2, 3, 1), (2, 0, 4, 2), (2, 1, 2, 6), (2, 2, 4, 4), (2, 3, 6, 4), (3, 1, 6, 3), (4, 3, 4, 8)]


def _window_id(case):
    block_size, halo_size, height, width = case
    return f"b{block_size}-h{halo_size}-{height}x{width}"


# --------------------------------------------------------------------------------------------
# Windows, relative tables and position logits


@pytest.mark.parametrize("case", WINDOW_CASES, ids=[_window_id(c) for c in WINDOW_CASES])
def test_halo_windows_cover_the_block_plus_halo_with_zeros_off_the_map(case):
    block_size, halo_size, height, width = case
    # Distinct nonzero values, so a shifted window or a wrong channel shows up.
    projected = np.arange(1, 2 * height * width * 3 + 1, dtype=np.float64).reshape(2, height, width, 3)
    got = halonet.halo_windows(projected, block_size, halo_size)
    want = loop_windows(projected, block_size, halo_size)
    assert got.shape == want.shape, f"expected windows of shape {want.shape}, got {got.shape}"
    np.testing.assert_array_equal(got, want, err_msg=f"halo windows for {_window_id(case)}")


def test_halo_window_of_a_corner_block_is_padded_on_its_outer_sides_only():
    # 4x4 map, block 2, halo 1: block (0, 0) sees rows and columns -1..2, block (1, 1) rows and
    # columns 1..4, where -1 and 4 are off the map.
    projected = np.arange(1, 17, dtype=np.float64).reshape(1, 4, 4, 1)
    windows = halonet.halo_windows(projected, 2, 1)[0, ..., 0]
    assert windows.shape == (2, 2, 4, 4), windows.shape
    want_first = np.zeros((4, 4))
    want_first[1:, 1:] = projected[0, :3, :3, 0]
    want_last = np.zeros((4, 4))
    want_last[:3, :3] = projected[0, 1:, 1:, 0]
    np.testing.assert_array_equal(windows[0, 0], want_first, err_msg="window of the top-left block")
    np.testing.assert_array_equal(windows[1, 1], want_last, err_msg="window of the bottom-right block")


@pytest.mark.parametrize("block_size, window", [(1, 1), (1, 3), (2, 2), (2, 4), (3, 9)])
def test_window_relative_table_entry_i_j_is_column_window_minus_1_plus_j_minus_i(block_size, window):
    table = np.arange(2 * (2 * window - 1), dtype=np.float64).reshape(2, 2 * window - 1)
    expanded = halonet.window_relative_table(table, block_size, window)
    assert expanded.shape == (2, block_size, window), f"expected shape {(2, block_size, window)}, got {expanded.shape}"
    for i, j in itertools.product(range(block_size), range(window)):
        np.testing.assert_array_equal(expanded[:, i, j], table[:, window - 1 + j - i], err_msg=f"entry [:, {i}, {j}]")


@pytest.mark.parametrize("block_size, halo_size", [(1, 0), (1, 2), (2, 1), (3, 0), (2, 3)])
def test_window_position_logits_match_scalar_loop(block_size, halo_size):
    window = block_size + 2 * halo_size
    rng = np.random.default_rng(10 * block_size + halo_size)
    query = rng.normal(size=(2, 2, 2, 1, block_size, block_size, 3))
    r_height, r_width = rng.normal(size=(3, 2 * window - 1)), rng.normal(size=(3, 2 * window - 1))
    got = halonet.window_position_logits(query, r_height, r_width, window)
    want = loop_position_logits(query, r_height, r_width, window)
    assert got.shape == want.shape, f"expected shape {want.shape}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"position logits, block {block_size}, halo {halo_size}")


# --------------------------------------------------------------------------------------------
# The whole layer

FORWARD_CASES = [
    # (input shape, config)
    ((2, 4, 6, 5), {"num_heads": 2, "key_dim": 3}),
    ((1, 4, 4, 3), {"num_heads": 1, "key_dim": 2, "block_size": 2, "halo_size": 0}),
    ((1, 6, 3, 4), {"num_heads": 2, "key_dim": 2, "block_size": 3, "halo_size": 1, "out_shape": 5, "out_bias": True}),
    ((1, 4, 6, 3), {"num_heads": 3, "key_dim": 2, "block_size": 2, "halo_size": 3, "out_weight": False}),
    ((2, 2, 4, 2), {"num_heads": 1, "key_dim": 3, "block_size": 2, "halo_size": 2, "out_weight": False, "out_bias": True}),
    ((1, 3, 2, 3), {"num_heads": 2, "key_dim": 2, "block_size": 1, "halo_size": 1}),
    ((1, 2, 3, 2), {"num_heads": 1, "key_dim": 4, "block_size": 1, "halo_size": 0, "out_shape": 3}),
    ((1, 4, 8, 2), {"num_heads": 1, "key_dim": 2, "block_size": 4, "halo_size": 1, "attn_dropout": 0.5}),
]


def _case_id(case):
    shape, config = case
    return "x".join(map(str, shape)) + "-" + ",".join(f"{k}={v}" for k, v in config.items())


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[_case_id(c) for c in FORWARD_CASES])
def test_forward_matches_loop_formulation(case):
    shape, config = case
    full, out_channels, inputs, weights = case_arrays(shape, config, seed=sum(shape) * 31 + len(config))
    got = reference.forward(LAYER, inputs, weights=weights, **config)
    want = loop_halo_attention(
        inputs,
        weights,
        num_heads=full["num_heads"],
        key_dim=full["key_dim"],
        block_size=full["block_size"],
        halo_size=full["halo_size"],
        out_weight=full["out_weight"],
        out_bias=full["out_bias"],
    )
    assert got.shape == (*shape[:3], out_channels), f"expected shape {(*shape[:3], out_channels)}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"forward differs from the loop formulation for {config}")


ORACLE_2021_CASES = [case for case in FORWARD_CASES if {**DEFAULTS, **case[1]}["block_size"] >= 2] + [
    ((2, 8, 12, 3), {"num_heads": 2, "key_dim": 2, "block_size": 4, "halo_size": 2}),
    ((1, 6, 9, 3), {"num_heads": 2, "key_dim": 2, "block_size": 3, "halo_size": 5}),
]


@pytest.mark.parametrize("case", ORACLE_2021_CASES, ids=[_case_id(c) for c in ORACLE_2021_CASES])
def test_forward_matches_the_2021_data_path(case):
    shape, config = case
    # The output projection is plain matrix algebra, tested above; this compares the attention.
    attention_only = {**config, "out_shape": None, "out_weight": False, "out_bias": False}
    full, _, inputs, weights = case_arrays(shape, attention_only, seed=7 + sum(shape))
    want = halo_attention_2021(
        inputs, weights, num_heads=full["num_heads"], key_dim=full["key_dim"], block_size=full["block_size"], halo_size=full["halo_size"]
    )
    got = reference.forward(LAYER, inputs, weights=weights, **attention_only)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"reference differs from the 2021 data path for {config}")


@pytest.mark.parametrize("block_size, halo_size", [(2, 0), (2, 1), (3, 2), (4, 3)])
def test_the_2021_rel_to_abs_picks_column_window_minus_1_plus_j_minus_i(block_size, halo_size):
    # Checks the oracle's own helper on distinct integers, so the comparison above rests on a
    # helper known to do what the spec says the 2021 code did.
    window = block_size + 2 * halo_size
    logits = np.arange(2 * 3 * block_size * block_size * (2 * window - 1), dtype=np.float64)
    logits = logits.reshape(2, 3, block_size, block_size, 2 * window - 1)
    converted = rel_to_abs_2021(logits)
    assert converted.shape == (2, 3, block_size, block_size, window), converted.shape
    for i, j in itertools.product(range(block_size), range(window)):
        np.testing.assert_array_equal(converted[..., i, j], logits[..., i, window - 1 + j - i], err_msg=f"query {i}, key {j}")


@pytest.mark.parametrize("halo_size", [0, 1, 2])
def test_the_2021_rel_to_abs_cannot_give_block_size_1_its_window(halo_size):
    # Why block_size=1 is defined by the index rule rather than by the 2021 code: its reshape
    # comes out one column short, or, with no halo, has nothing left to reshape.
    window = 1 + 2 * halo_size
    logits = np.zeros((1, 1, 1, 1, 2 * window - 1))
    if halo_size == 0:
        with pytest.raises(ValueError):
            rel_to_abs_2021(logits)
        return
    converted = rel_to_abs_2021(logits)
    assert converted.shape[-1] == window - 1, f"expected {window - 1} columns, the 2021 reshape gave {converted.shape[-1]}"


def test_unpadded_keys_are_not_masked_and_values_are_grouped_by_head():
    # Zero query kernel and tables: every logit is 0, so each query averages all win*win values
    # of its window with weight 1/win^2, off-map zeros included. Head n must read its value from
    # key_value columns n*2*key_dim + key_dim + d.
    num_heads, key_dim, block_size, halo_size = 2, 2, 2, 1
    window = block_size + 2 * halo_size
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(1, 4, 2, 3))
    weights = {
        "query": np.zeros((3, 4)),
        "key_value": rng.normal(size=(3, 8)),
        "r_width": np.zeros((key_dim, 2 * window - 1)),
        "r_height": np.zeros((key_dim, 2 * window - 1)),
    }
    got = reference.forward(LAYER, inputs, weights=weights, num_heads=num_heads, key_dim=key_dim, out_weight=False)
    projected = inputs[0] @ weights["key_value"]  # [4, 2, 8]
    want = np.zeros((4, 2, 4))
    for row, col, n, d in itertools.product(range(4), range(2), range(num_heads), range(key_dim)):
        top = row - row % block_size - halo_size
        total = sum(
            projected[p, q, n * 2 * key_dim + key_dim + d]
            for p in range(top, top + window)
            for q in range(-halo_size, window - halo_size)
            if 0 <= p < 4 and 0 <= q < 2
        )
        want[row, col, n * key_dim + d] = total / window**2
    np.testing.assert_allclose(got[0], want, rtol=RTOL, atol=ATOL, err_msg="uniform attention over the whole window, padding included")


def test_position_logits_use_the_query_scaled_by_key_dim():
    # With a zero key_value's key half the content logits vanish; the attention then comes from
    # the position logits of the scaled query alone, and an unscaled query would visibly differ.
    key_dim, block_size, halo_size = 4, 2, 1
    full, _, inputs, weights = case_arrays((1, 2, 2, 3), {"num_heads": 1, "key_dim": key_dim, "out_weight": False}, seed=11)
    weights["key_value"][:, :key_dim] = 0.0
    weights["r_height"] *= 3.0
    weights["r_width"] *= 3.0
    got = reference.forward(LAYER, inputs, weights=weights, num_heads=1, key_dim=key_dim, out_weight=False)

    def attend(scale):
        rescaled = {**weights, "query": weights["query"] * scale * math.sqrt(key_dim)}
        return loop_halo_attention(inputs, rescaled, num_heads=1, key_dim=key_dim, block_size=block_size, halo_size=halo_size, out_weight=False, out_bias=False)

    scaled, unscaled = attend(key_dim**-0.5), attend(1.0)
    np.testing.assert_allclose(got, scaled, rtol=RTOL, atol=ATOL, err_msg="position logits should use the query scaled by key_dim ** -0.5")
    gap = np.max(np.abs(scaled - unscaled))
    assert gap > 1e-3, f"test is not sensitive to the scale: scaled and unscaled outputs differ by only {gap}"


@pytest.mark.parametrize("block_size, halo_size", [(2, 1), (1, 2), (3, 3)])
def test_only_table_columns_from_2_halo_on_are_read(block_size, halo_size):
    config = {"num_heads": 1, "key_dim": 2, "block_size": block_size, "halo_size": halo_size}
    shape = (1, 2 * block_size, block_size, 2)
    _, _, inputs, weights = case_arrays(shape, config, seed=block_size + 5 * halo_size)
    base = reference.forward(LAYER, inputs, weights=weights, **config)
    for name in ("r_height", "r_width"):
        unread = dict(weights, **{name: weights[name].copy()})
        unread[name][:, : 2 * halo_size] += 5.0
        np.testing.assert_array_equal(reference.forward(LAYER, inputs, weights=unread, **config), base, err_msg=f"{name} columns < 2*halo changed the output")
        first_read = dict(weights, **{name: weights[name].copy()})
        first_read[name][:, 2 * halo_size] += 5.0
        change = np.max(np.abs(reference.forward(LAYER, inputs, weights=first_read, **config) - base))
        assert change > 1e-6, f"{name} column {2 * halo_size} should be read; the output moved by only {change}"


def test_block_1_halo_0_attends_to_the_pixel_itself():
    # One key per window: the softmax is exactly 1 and each pixel gets its own value, projected.
    num_heads, key_dim = 2, 3
    _, _, inputs, weights = case_arrays((2, 3, 2, 4), {"num_heads": num_heads, "key_dim": key_dim, "block_size": 1, "halo_size": 0}, seed=21)
    got = reference.forward(LAYER, inputs, weights=weights, num_heads=num_heads, key_dim=key_dim, block_size=1, halo_size=0)
    value_columns = [n * 2 * key_dim + key_dim + d for n in range(num_heads) for d in range(key_dim)]
    want = (inputs @ weights["key_value"][:, value_columns]) @ weights["output_weight"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg="block 1, halo 0: the output is the pixel's own value")


# --------------------------------------------------------------------------------------------
# The README example (numbers copied from docs/attention_layers_README.md)


def test_readme_output_shape():
    got = reference.output_shape(LAYER, (1, 14, 16, 256))
    assert got == (1, 14, 16, 512), f"README says (1, 14, 16, 512), reference gives {got}"


def test_readme_weight_shapes():
    got = reference.weight_shapes(LAYER, (1, 14, 16, 256))
    readme = {"query": (256, 512), "key_value": (256, 1024), "output_weight": (512, 512), "r_width": (128, 7), "r_height": (128, 7)}
    assert got == readme and list(got) == list(readme), f"README weights are {readme}, reference gives {got}"


@pytest.mark.parametrize(
    "config, channels",
    [({"out_weight": False}, 512), ({"out_weight": False, "out_bias": True}, 512), ({"out_shape": 7, "out_bias": True}, 7), ({"num_heads": 2, "key_dim": 3}, 6)],
)
def test_output_channels_follow_heads_times_key_dim_not_the_input(config, channels):
    shape = reference.output_shape(LAYER, (1, 4, 4, 256), **config)
    assert shape == (1, 4, 4, channels), f"{config}: expected {channels} output channels, got {shape}"
    if config.get("out_bias"):
        bias = reference.weight_shapes(LAYER, (1, 4, 4, 256), **config)["output_bias"]
        assert bias == (channels,), f"{config}: output_bias should have {channels} entries, got {bias}"


# --------------------------------------------------------------------------------------------
# Rejections


def test_height_not_a_multiple_of_block_size_names_both_numbers():
    with pytest.raises(reference.DomainError) as info:
        reference.validate(LAYER, (1, 14, 16, 8), block_size=4)
    assert str(info.value) == "HaloAttention: height 14 is not a multiple of block_size 4", str(info.value)


@pytest.mark.parametrize("index, rejection", list(enumerate(reference.spec(LAYER).rejections)), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_every_documented_rejection_raises_its_message(index, rejection):
    with pytest.raises(reference.DomainError) as info:
        reference.validate(LAYER, *rejection.input_shapes, **rejection.config)
    message = str(info.value)
    assert message.startswith(f"{LAYER}: ") and rejection.message in message, f"rejection {index}: expected {rejection.message!r}, got {message!r}"


@pytest.mark.parametrize(
    "config",
    [{"out_shape": 4, "out_weight": False, "num_heads": 2, "key_dim": 2}, {"block_size": 3, "halo_size": 0}, {"block_size": 1, "halo_size": 3}],
    ids=["out_shape-equal-to-embed", "halo-0", "halo-above-block-1"],
)
def test_edge_configs_are_accepted(config):
    full = reference.validate(LAYER, (1, 3 * config.get("block_size", 2), config.get("block_size", 2), 2), **config)
    for key, value in config.items():
        assert full[key] == value, f"validate changed {key}={value!r} into {full[key]!r}"


# --------------------------------------------------------------------------------------------
# The edge draws reach this layer's own corners


def test_edge_draws_reach_the_halo_corners():
    # Every run checks the edge cases, so they should cover the code paths that differ: a single
    # key per window, no halo, a halo equal to and larger than its block, three blocks per side.
    spec = reference.spec(LAYER)
    reached = set()
    for template in EDGE_DRAWS:
        draw = template.fresh()
        config = spec.draw_config(draw)
        _, height, width, _ = spec.sample_input_shapes(config, draw)[0]
        block_size, halo_size = config["block_size"], config["halo_size"]
        reached |= {f"block_size {block_size}", f"halo {'<' if halo_size < block_size else '=' if halo_size == block_size else '>'} block"}
        if halo_size == 0:
            reached.add("no halo")
        if block_size == 1 and halo_size == 0:
            reached.add("single key")
        if max(height, width) == 3 * block_size:
            reached.add("three blocks per side")
        if not config["out_weight"]:
            reached.add("no out_weight")
    wanted = {"block_size 1", "block_size 4", "no halo", "halo < block", "halo = block", "halo > block", "single key", "three blocks per side", "no out_weight"}
    assert wanted <= reached, f"the edge draws never reach {sorted(wanted - reached)}"
