"""Self-tests of the reference volo layers against slow formulations.

The slow formulations are written the obvious way, one pixel, window, head and channel at a
time with Python loops and ``math``; they share no code with ``reference.volo``. In particular
the fold is written from the output side (each output pixel sums every window offset that
lands on it) while the reference scatters from the window side.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

import reference
from reference import volo

# Loop and vectorised versions both compute in float64 and differ only in the order of their
# summations, so they agree to a few ulps of O(1) values: 1e-12 leaves a wide margin while
# still catching any wrong index, divisor or scale.
RTOL = 1e-12
ATOL = 1e-12


# --------------------------------------------------------------------------------------------
# Slow formulations


def dense(vector, kernel, bias=None):
    """``vector @ kernel (+ bias)`` one output channel at a time."""
    inputs, outputs = kernel.shape
    assert len(vector) == inputs, f"dense: vector of length {len(vector)} for a kernel {kernel.shape}"
    out = []
    for o in range(outputs):
        total = sum(float(vector[i]) * float(kernel[i, o]) for i in range(inputs))
        out.append(total + (float(bias[o]) if bias is not None else 0.0))
    return out


def loop_softmax(row):
    largest = max(row)
    exps = [math.exp(v - largest) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def loop_outlook_attention(x, weights, *, embed_dim, num_head, kernel_size, padding, strides):
    """outlook_attention written out (the semantics of VOLO's unfold -> attention -> fold).

    Pooling averages the pixels of each ``strides x strides`` block that lie in the map. Window
    ``(m, q)`` offset ``(ki, kj)`` sits on pixel ``(m*s + ki - p, q*s + kj - p)``, with
    ``p = k // 2`` only for padding 1; outside the map the value is zero.
    """
    batch, height, width, channels = x.shape
    k, s = kernel_size, strides
    p = k // 2 if padding == 1 else 0
    depth = embed_dim // num_head
    rows, cols = math.ceil(height / s), math.ceil(width / s)
    value = {(b, y, z): dense(x[b, y, z], weights["v/kernel"]) for b, y, z in itertools.product(range(batch), range(height), range(width))}

    def value_at(b, y, z, c):
        return value[b, y, z][c] if 0 <= y < height and 0 <= z < width else 0.0

    mixed = {}  # (b, m, q, ki, kj) -> the window offset's E channels after attention
    for b, m, q in itertools.product(range(batch), range(rows), range(cols)):
        block = [(y, z) for y in range(m * s, m * s + s) for z in range(q * s, q * s + s) if y < height and z < width]
        pooled = [sum(float(x[b, y, z, c]) for y, z in block) / len(block) for c in range(channels)]
        logits = dense(pooled, weights["attn/kernel"], weights["attn/bias"])
        for ki, kj in itertools.product(range(k), range(k)):
            i = ki * k + kj
            channels_out = [0.0] * embed_dim
            for h in range(num_head):
                probs = loop_softmax([logits[h * k**4 + i * k * k + j] / math.sqrt(depth) for j in range(k * k)])
                for e in range(depth):
                    c = h * depth + e
                    channels_out[c] = sum(
                        probs[j] * value_at(b, m * s + j // k - p, q * s + j % k - p, c) for j in range(k * k)
                    )
            mixed[b, m, q, ki, kj] = channels_out

    out = np.zeros((batch, height, width, embed_dim))
    for b, y, z in itertools.product(range(batch), range(height), range(width)):
        folded = [0.0] * embed_dim
        for m, q, ki, kj in itertools.product(range(rows), range(cols), range(k), range(k)):
            if m * s + ki - p == y and q * s + kj - p == z:
                folded = [a + c for a, c in zip(folded, mixed[b, m, q, ki, kj])]
        out[b, y, z] = dense(folded, weights["out/kernel"], weights["out/bias"])
    return out


def loop_outlook_attention_simple(x, weights, *, embed_dim, num_head, kernel_size):
    """outlook_attention_simple written out, one output pixel at a time.

    Pixel ``(y, z)`` belongs to window ``(y // k, z // k)`` at offset ``(y % k) * k + z % k``.
    Pixels past the map (the bottom / right zero padding) are zero vectors; the block average
    divides by ``k*k`` whatever the padding.
    """
    batch, height, width, channels = x.shape
    k = kernel_size
    depth = embed_dim // num_head

    def pixel(b, y, z):
        return x[b, y, z] if y < height and z < width else np.zeros(channels)

    out = np.zeros((batch, height, width, embed_dim))
    for b, y, z in itertools.product(range(batch), range(height), range(width)):
        top, left = (y // k) * k, (z // k) * k
        block = [(top + a, left + c) for a in range(k) for c in range(k)]  # offset j = a * k + c
        i = (y % k) * k + z % k
        pooled = [sum(float(pixel(b, yy, zz)[c]) for yy, zz in block) / (k * k) for c in range(channels)]
        logits = dense(pooled, weights["attn/kernel"], weights["attn/bias"])
        values = [dense(pixel(b, yy, zz), weights["v/kernel"]) for yy, zz in block]
        attended = [0.0] * embed_dim
        for h in range(num_head):
            probs = loop_softmax([logits[h * k**4 + i * k * k + j] / math.sqrt(depth) for j in range(k * k)])
            for e in range(depth):
                c = h * depth + e
                attended[c] = sum(probs[j] * values[j][c] for j in range(k * k))
        out[b, y, z] = dense(attended, weights["out/kernel"], weights["out/bias"])
    return out


# --------------------------------------------------------------------------------------------
# Helpers


def random_outlook_weights(rng, channels, embed_dim, num_head, kernel_size):
    """Weights with shapes written out here (not read from the spec)."""
    attn = kernel_size**4 * num_head
    return {
        "v/kernel": rng.normal(size=(channels, embed_dim)) / math.sqrt(channels),
        "attn/kernel": rng.normal(size=(channels, attn)) / math.sqrt(channels),
        "attn/bias": rng.normal(size=(attn,)),
        "out/kernel": rng.normal(size=(embed_dim, embed_dim)) / math.sqrt(embed_dim),
        "out/bias": rng.normal(size=(embed_dim,)),
    }


class ScriptedDraw:
    """A ``Draw`` that answers by a rule: ``pick(low, high)`` for integers and option indices."""

    def __init__(self, pick):
        self.pick = pick

    def integer(self, label, low, high):
        value = self.pick(low, high)
        assert low <= value <= high, f"{label}: scripted answer {value} outside [{low}, {high}]"
        return value

    def choice(self, label, options):
        options = tuple(options)
        return options[self.integer(label, 0, len(options) - 1)]

    def real(self, label, low, high):
        return low + (high - low) * (self.pick(0, 4) / 4)


def _clamped(value):
    return lambda low, high: min(max(value, low), high)


def _cycling():
    counter = itertools.count()
    return lambda low, high: low + next(counter) % (high - low + 1)


def _seeded(seed):
    generator = random.Random(seed)
    return lambda low, high: generator.randint(low, high)


DRAW_RULES = {
    "low": lambda low, high: low,
    "high": lambda low, high: high,
    "two": _clamped(2),
    "three": _clamped(3),
    "cycling": None,  # a fresh counter per use, below
}


def scripted_draws():
    for name, rule in DRAW_RULES.items():
        yield name, ScriptedDraw(rule if rule is not None else _cycling())
    for seed in range(60):
        yield f"seed{seed}", ScriptedDraw(_seeded(seed))


# (embed_dim, num_head, kernel_size, padding, strides, input shape): odd and even sizes, sides
# of 1, every kernel 1-5, strides 1-3, both paddings, windows overlapping, tiling and leaving gaps.
OUTLOOK_CASES = [
    (4, 2, 3, 1, 2, (2, 4, 4, 3)),
    (6, 2, 3, 1, 2, (1, 5, 7, 4)),
    (3, 3, 3, 1, 2, (1, 1, 1, 2)),
    (2, 1, 3, 1, 2, (2, 2, 3, 2)),
    (4, 2, 3, 1, 1, (1, 3, 4, 2)),
    (6, 3, 3, 1, 3, (1, 7, 5, 3)),
    (3, 1, 3, 1, 3, (1, 6, 3, 2)),  # no window reaches the bottom row
    (2, 2, 1, 0, 1, (1, 3, 4, 2)),
    (3, 1, 1, 1, 2, (1, 3, 5, 2)),
    (4, 2, 2, 1, 2, (1, 5, 3, 3)),
    (2, 1, 2, 0, 2, (1, 4, 6, 2)),
    (4, 1, 2, 0, 3, (2, 6, 3, 3)),
    (3, 1, 3, 0, 3, (1, 6, 3, 2)),
    (6, 3, 4, 1, 3, (1, 5, 4, 3)),
    (4, 2, 4, 1, 2, (1, 5, 7, 2)),
    (2, 2, 5, 1, 1, (1, 4, 3, 2)),
    (4, 2, 5, 1, 3, (1, 7, 2, 3)),
]


def _outlook_id(case):
    embed, heads, k, padding, s, shape = case
    return f"E{embed}-n{heads}-k{k}-p{padding}-s{s}-{shape[1]}x{shape[2]}"


# --------------------------------------------------------------------------------------------
# outlook_attention: the whole layer and its pieces


@pytest.mark.parametrize("case", OUTLOOK_CASES, ids=[_outlook_id(c) for c in OUTLOOK_CASES])
def test_outlook_attention_matches_loop_formulation(case):
    embed, heads, k, padding, s, shape = case
    rng = np.random.default_rng(sum(shape) * 31 + k * 7 + s)
    x = rng.normal(size=shape)
    weights = random_outlook_weights(rng, shape[-1], embed, heads, k)
    config = {"embed_dim": embed, "num_head": heads, "kernel_size": k, "padding": padding, "strides": s}
    got = reference.forward("outlook_attention", x, weights=weights, **config)
    want = loop_outlook_attention(x, weights, **config)
    assert got.shape == (*shape[:3], embed), f"expected shape {(*shape[:3], embed)}, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"outlook_attention {config} on {shape}")


@pytest.mark.parametrize("kernel_size, strides", [(3, 2), (2, 3), (4, 1), (1, 2), (5, 2)])
def test_unfold_window_m_offset_i_reads_pixel_m_times_strides_plus_i(kernel_size, strides):
    rng = np.random.default_rng(kernel_size * 10 + strides)
    x = rng.normal(size=(2, 9, 8, 3))
    got = volo.unfold(x, kernel_size, strides)
    rows, cols = (9 - kernel_size) // strides + 1, (8 - kernel_size) // strides + 1
    assert got.shape == (2, rows, cols, kernel_size, kernel_size, 3), f"unexpected unfold shape {got.shape}"
    for m, q, i, j in itertools.product(range(rows), range(cols), range(kernel_size), range(kernel_size)):
        np.testing.assert_array_equal(got[:, m, q, i, j], x[:, m * strides + i, q * strides + j], err_msg=f"window ({m}, {q}) offset ({i}, {j})")


@pytest.mark.parametrize("kernel_size, strides", [(3, 2), (3, 1), (2, 3), (4, 2), (1, 2), (5, 2)])
def test_fold_pixel_is_the_sum_over_every_window_offset_covering_it(kernel_size, strides):
    rng = np.random.default_rng(kernel_size * 100 + strides)
    rows, cols = 3, 2
    size = ((rows - 1) * strides + kernel_size, (cols - 1) * strides + kernel_size + 1)  # one column no window reaches
    windows = rng.normal(size=(2, rows, cols, kernel_size, kernel_size, 3))
    got = volo.fold(windows, size, strides)
    assert got.shape == (2, *size, 3), f"expected shape {(2, *size, 3)}, got {got.shape}"
    for y, z in itertools.product(range(size[0]), range(size[1])):
        want = np.zeros((2, 3))
        for m, q, i, j in itertools.product(range(rows), range(cols), range(kernel_size), range(kernel_size)):
            if m * strides + i == y and q * strides + j == z:
                want = want + windows[:, m, q, i, j]
        np.testing.assert_allclose(got[:, y, z], want, rtol=RTOL, atol=ATOL, err_msg=f"folded pixel ({y}, {z})")


@pytest.mark.parametrize("pool, size", [(2, (4, 6)), (2, (5, 3)), (3, (4, 7)), (3, (1, 2)), (1, (3, 2))])
def test_ceil_average_pool_averages_the_pixels_inside_the_map(pool, size):
    rng = np.random.default_rng(pool * 10 + size[0])
    x = rng.normal(size=(2, *size, 3))
    got = volo.ceil_average_pool(x, pool)
    rows, cols = math.ceil(size[0] / pool), math.ceil(size[1] / pool)
    assert got.shape == (2, rows, cols, 3), f"expected shape {(2, rows, cols, 3)}, got {got.shape}"
    for m, q in itertools.product(range(rows), range(cols)):
        pixels = [x[:, y, z] for y in range(m * pool, min((m + 1) * pool, size[0])) for z in range(q * pool, min((q + 1) * pool, size[1]))]
        np.testing.assert_allclose(got[:, m, q], sum(pixels) / len(pixels), rtol=RTOL, atol=ATOL, err_msg=f"pooled ({m}, {q})")


def test_ceil_pool_is_the_2021_valid_pool_where_strides_divide_the_map():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 6, 9, 2))
    got = volo.ceil_average_pool(x, 3)
    valid = x.reshape(1, 2, 3, 3, 3, 2).mean(axis=(2, 4))  # every block whole: divisor 9
    np.testing.assert_allclose(got, valid, rtol=RTOL, atol=ATOL)


def test_attend_windows_is_softmax_over_input_offsets_per_head():
    rng = np.random.default_rng(6)
    k, heads, depth = 2, 3, 2
    windows = rng.normal(size=(1, 2, 1, k, k, heads * depth))
    logits = rng.normal(size=(1, 2, 1, heads * k**4))
    got = volo.attend_windows(windows, logits, heads)
    for m, h, ki, kj in itertools.product(range(2), range(heads), range(k), range(k)):
        i = ki * k + kj
        probs = loop_softmax([logits[0, m, 0, h * k**4 + i * k * k + j] for j in range(k * k)])
        for e in range(depth):
            c = h * depth + e
            want = sum(probs[j] * windows[0, m, 0, j // k, j % k, c] for j in range(k * k))
            assert got[0, m, 0, ki, kj, c] == pytest.approx(want, rel=RTOL, abs=ATOL), f"window {m}, head {h}, offset {i}, channel {c}"


def test_kernel_1_stride_1_is_a_per_pixel_projection():
    # One window per pixel holding that pixel alone: the softmax over one offset is 1.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 5, 4))
    weights = random_outlook_weights(rng, 4, 6, 2, 1)
    got = reference.forward("outlook_attention", x, weights=weights, embed_dim=6, num_head=2, kernel_size=1, padding=0, strides=1)
    want = x @ weights["v/kernel"] @ weights["out/kernel"] + weights["out/bias"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_pixels_no_window_covers_output_only_the_out_bias():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 6, 6, 3))
    weights = random_outlook_weights(rng, 3, 2, 1, 2)
    got = reference.forward("outlook_attention", x, weights=weights, embed_dim=2, num_head=1, kernel_size=2, padding=0, strides=3)
    covered = np.array([True, True, False, True, True, False])  # windows at 0-1 and 3-4
    for y, z in itertools.product(range(6), range(6)):
        if not (covered[y] and covered[z]):
            np.testing.assert_array_equal(got[0, y, z], weights["out/bias"], err_msg=f"uncovered pixel ({y}, {z})")
        else:
            assert not np.allclose(got[0, y, z], weights["out/bias"]), f"covered pixel ({y}, {z}) got only the bias"


@pytest.mark.parametrize("name, config", [
    ("outlook_attention", {"kernel_size": 2, "padding": 0, "strides": 2}),
    ("outlook_attention_simple", {"kernel_size": 2}),
])
def test_logits_are_divided_by_sqrt_of_channels_per_head(name, config):
    # One 2 x 2 window covering the map, d = 8 // 2 = 4 channels per head, a zero attention
    # kernel: the logits are the bias / 2 (the 2021 code divides by sqrt(d)).
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1, 2, 2, 3))
    weights = random_outlook_weights(rng, 3, 8, 2, 2)
    weights["attn/kernel"] = np.zeros_like(weights["attn/kernel"])
    weights["out/kernel"], weights["out/bias"] = np.eye(8), np.zeros(8)
    got = reference.forward(name, x, weights=weights, embed_dim=8, num_head=2, **config)
    value = (x @ weights["v/kernel"]).reshape(4, 8)  # offset j = row * 2 + column
    bias = weights["attn/bias"].reshape(2, 4, 4)  # [head, output offset, input offset]
    for h, i in itertools.product(range(2), range(4)):
        exps = np.exp(bias[h, i] / 2.0)
        want = (exps / exps.sum()) @ value[:, h * 4 : h * 4 + 4]
        np.testing.assert_allclose(got[0, i // 2, i % 2, h * 4 : h * 4 + 4], want, rtol=RTOL, atol=ATOL, err_msg=f"head {h}, offset {i}")


# --------------------------------------------------------------------------------------------
# outlook_attention: domain


def fits_by_counting(size, kernel_size, padding, strides):
    """Whether ``ceil(size / strides)`` pooled positions meet as many windows, by listing the
    window starts that fit in the padded map."""
    border = kernel_size // 2 if padding == 1 else 0
    starts = [start for start in range(0, size + 2 * border, strides) if start + kernel_size <= size + 2 * border]
    return len(starts) == math.ceil(size / strides)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("strides", [1, 2, 3, 4])
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, 6, 7])
def test_shape_rule_accepts_exactly_the_sizes_where_counts_match(kernel_size, padding, strides):
    config = {"embed_dim": 2, "num_head": 1, "kernel_size": kernel_size, "padding": padding, "strides": strides}
    sizes = range(1, 40)
    fitting = [n for n in sizes if fits_by_counting(n, kernel_size, padding, strides)]
    if not fitting:
        with pytest.raises(reference.DomainError, match=f"kernel_size {kernel_size}"):
            reference.validate("outlook_attention", (1, 1, 1, 2), **config)
        return
    for n in sizes:
        if n in fitting:
            reference.validate("outlook_attention", (1, n, n, 2), **config)
        else:
            with pytest.raises(reference.DomainError, match=f"height {n} gives"):
                reference.validate("outlook_attention", (1, n, fitting[0], 2), **config)
            with pytest.raises(reference.DomainError, match=f"width {n} gives"):
                reference.validate("outlook_attention", (1, fitting[0], n, 2), **config)


def test_the_sizes_fitting_each_window_count_are_one_nonempty_run():
    # The sampler draws a window count, then a size between fitting_sizes' bounds: every size
    # there must fit, for every configuration the config rule admits.
    for kernel_size, strides, padding in itertools.product(range(1, 8), range(1, 5), (0, 1)):
        config = {"embed_dim": 2, "num_head": 1, "kernel_size": kernel_size, "padding": padding, "strides": strides}
        try:
            reference.validate("outlook_attention", (1, 1, 1, 2) if padding else (1, strides, strides, 2), **config)
        except reference.DomainError as exc:
            assert f"kernel_size {kernel_size}" in str(exc), str(exc)
            continue
        for windows in range(1, 7):
            fitting = [n for n in range(1, 40) if math.ceil(n / strides) == windows and fits_by_counting(n, kernel_size, padding, strides)]
            low, high = volo.fitting_sizes(windows, kernel_size, padding, strides)
            assert fitting == list(range(low, high + 1)), f"{config}, {windows} windows: sizes {fitting}, fitting_sizes gives {low}..{high}"


def test_odd_kernel_with_padding_fits_every_size():
    for kernel_size, strides, size in itertools.product((1, 3, 5, 7), (1, 2, 3), range(1, 30)):
        reference.validate("outlook_attention", (1, size, size + 1, 2), embed_dim=2, num_head=1, kernel_size=kernel_size, strides=strides)


def test_readme_positional_call_names_the_swap():
    with pytest.raises(reference.DomainError) as info:
        reference.validate("outlook_attention", (1, 28, 28, 192), embed_dim=4, num_head=192)
    message = str(info.value)
    assert message == (
        "outlook_attention: embed_dim 4 is smaller than num_head 192 (0 channels per head); did you mean embed_dim=192, num_head=4?"
    ), message


def test_no_swap_is_suggested_when_the_swap_would_not_fit_either():
    with pytest.raises(reference.DomainError) as info:
        reference.validate("outlook_attention", (1, 4, 4, 4), embed_dim=4, num_head=6)
    assert "did you mean" not in str(info.value), str(info.value)


def test_readme_configuration_weights_and_shape():
    shapes = reference.weight_shapes("outlook_attention", (1, 28, 28, 192), embed_dim=192, num_head=4)
    assert shapes == {
        "v/kernel": (192, 192),
        "attn/kernel": (192, 324),  # 3**4 * 4
        "attn/bias": (324,),
        "out/kernel": (192, 192),
        "out/bias": (192,),
    }, shapes
    assert reference.output_shape("outlook_attention", (1, 28, 28, 192), embed_dim=192, num_head=4) == (1, 28, 28, 192)


def test_output_has_embed_dim_channels_whatever_the_input_channels():
    assert reference.output_shape("outlook_attention", (2, 5, 3, 7), embed_dim=4, num_head=2) == (2, 5, 3, 4)
    assert reference.output_shape("outlook_attention_simple", (2, 5, 3, 7), embed_dim=4, num_head=2) == (2, 5, 3, 4)


@pytest.mark.parametrize("name", ["outlook_attention", "outlook_attention_simple", "PositionalEmbedding", "ClassToken"])
def test_every_documented_rejection_is_raised_with_its_message(name):
    for rejection in reference.spec(name).rejections:
        with pytest.raises(reference.DomainError) as info:
            reference.validate(name, *rejection.input_shapes, **rejection.config)
        assert str(info.value).startswith(f"{name}: "), str(info.value)
        assert rejection.message in str(info.value), f"expected {rejection.message!r} in {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# outlook_attention_simple

SIMPLE_CASES = [
    (4, 2, 3, (2, 4, 4, 3)),
    (6, 2, 3, (1, 4, 8, 5)),  # height padded by 2, width by 1: the 2021 code's failing case
    (6, 3, 3, (1, 6, 3, 2)),  # whole windows, no padding
    (4, 2, 2, (1, 3, 5, 3)),
    (2, 1, 1, (2, 2, 3, 2)),
    (3, 1, 4, (1, 5, 2, 2)),
    (2, 2, 3, (1, 1, 1, 3)),
]


@pytest.mark.parametrize("case", SIMPLE_CASES, ids=[f"E{e}-n{n}-k{k}-{s[1]}x{s[2]}" for e, n, k, s in SIMPLE_CASES])
def test_outlook_attention_simple_matches_loop_formulation(case):
    embed, heads, k, shape = case
    rng = np.random.default_rng(sum(shape) * 13 + k)
    x = rng.normal(size=shape)
    weights = random_outlook_weights(rng, shape[-1], embed, heads, k)
    config = {"embed_dim": embed, "num_head": heads, "kernel_size": k}
    got = reference.forward("outlook_attention_simple", x, weights=weights, **config)
    want = loop_outlook_attention_simple(x, weights, **config)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"outlook_attention_simple {config} on {shape}")


def test_simple_windows_do_not_mix():
    # Changing one pixel changes only the pixels of its own k x k window.
    rng = np.random.default_rng(11)
    x = rng.normal(size=(1, 6, 5, 2))
    weights = random_outlook_weights(rng, 2, 2, 1, 3)
    before = reference.forward("outlook_attention_simple", x, weights=weights, embed_dim=2, num_head=1)
    x[0, 4, 1] += 1.0
    after = reference.forward("outlook_attention_simple", x, weights=weights, embed_dim=2, num_head=1)
    changed = np.any(before != after, axis=-1)[0]
    window = np.zeros((6, 5), bool)
    window[3:6, 0:3] = True
    np.testing.assert_array_equal(changed, window)


def test_simple_counts_the_zero_padding_in_its_average():
    # 1 x 1 map, kernel 2: the window holds the pixel and three zeros, so the pooled vector is
    # x / 4, not x. With a zero attention kernel the bias alone sets the logits; feeding x / 4
    # through the attention kernel must match.
    rng = np.random.default_rng(12)
    x = rng.normal(size=(1, 1, 1, 3))
    weights = random_outlook_weights(rng, 3, 2, 1, 2)
    got = reference.forward("outlook_attention_simple", x, weights=weights, embed_dim=2, num_head=1, kernel_size=2)
    logits = x[0, 0, 0] / 4 @ weights["attn/kernel"] + weights["attn/bias"]
    probs = loop_softmax(list(logits[:4] / math.sqrt(2)))  # head 0, output offset 0, inputs 0..3
    value = x[0, 0, 0] @ weights["v/kernel"]  # offsets 1..3 are padding, value zero
    want = probs[0] * value @ weights["out/kernel"] + weights["out/bias"]
    np.testing.assert_allclose(got[0, 0, 0], want, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# PositionalEmbedding and ClassToken


def test_positional_embedding_adds_one_vector_per_pixel():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(3, 2, 4, 5))
    table = rng.normal(size=(1, 2, 4, 5))
    got = reference.forward("PositionalEmbedding", x, weights={"positional_embedding": table})
    for b, y, z, c in itertools.product(range(3), range(2), range(4), range(5)):
        assert got[b, y, z, c] == x[b, y, z, c] + table[0, y, z, c]


def test_positional_embedding_documented_shapes():
    assert reference.weight_shapes("PositionalEmbedding", (2, 8, 16, 49)) == {"positional_embedding": (1, 8, 16, 49)}
    assert reference.output_shape("PositionalEmbedding", (2, 8, 16, 49)) == (2, 8, 16, 49)


def test_class_token_is_token_0_of_every_batch_entry():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(3, 4, 5))
    tokens = rng.normal(size=(1, 1, 5))
    got = reference.forward("ClassToken", x, weights={"tokens": tokens})
    assert got.shape == (3, 5, 5), got.shape
    for b in range(3):
        np.testing.assert_array_equal(got[b, 0], tokens[0, 0])
        for n in range(4):
            np.testing.assert_array_equal(got[b, n + 1], x[b, n])


def test_class_token_documented_shapes():
    assert reference.weight_shapes("ClassToken", (2, 196, 192)) == {"tokens": (1, 1, 192)}
    assert reference.output_shape("ClassToken", (2, 196, 192)) == (2, 197, 192)


# --------------------------------------------------------------------------------------------
# Sampling: any answer inside the asked ranges gives a config and shapes in the domain


@pytest.mark.parametrize("name", ["outlook_attention", "outlook_attention_simple", "PositionalEmbedding", "ClassToken"])
def test_samplers_stay_in_the_domain_for_any_answers(name):
    spec = reference.spec(name)
    seen_configs = set()
    for label, draw in scripted_draws():
        config = spec.draw_config(draw)
        shapes = spec.sample_input_shapes(config, draw)
        try:
            reference.validate(name, *shapes, **config)
        except reference.DomainError as exc:
            pytest.fail(f"{label} draw: {config} on {shapes} is outside the domain: {exc}")
        seen_configs.add(tuple(sorted((k, v) for k, v in config.items() if "dropout" not in k)))
    if spec.params:
        assert len(seen_configs) > 10, f"the scripted draws reached only {len(seen_configs)} configs"


def test_outlook_sampler_reaches_every_kernel_stride_and_padding():
    seen = set()
    for _, draw in scripted_draws():
        config = reference.spec("outlook_attention").draw_config(draw)
        seen.add((config["kernel_size"], config["padding"], config["strides"]))
    kernels = {k for k, _, _ in seen}
    assert kernels == {1, 2, 3, 4, 5}, f"kernels drawn: {sorted(kernels)}"
    assert {p for _, p, _ in seen} == {0, 1} and {s for _, _, s in seen} == {1, 2, 3}, sorted(seen)
