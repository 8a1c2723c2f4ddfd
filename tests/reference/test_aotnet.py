"""Self-tests of the reference aotnet blocks (anti_alias_downsample, batchnorm_with_activation,
conv2d_no_bias, se_module) against slow formulations.

Each slow formulation is written the obvious way (Python loops, one scalar at a time, its own
padding arithmetic) so that it can be checked by reading it; the vectorised reference must
agree with it.
"""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

import reference
from reference import aotnet

# Loop and vectorised versions both compute in float64 and differ only in summation order.
RTOL = 1e-12
ATOL = 1e-12


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's parameters, the same on every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random_weights(layer, input_shape, config, rng):
    """Weights at the spec's scales; strictly positive where the spec says so."""
    out = {}
    for w in reference.weight_specs(layer, input_shape, **config):
        value = rng.normal(size=w.shape) * w.std
        out[w.name] = np.abs(value) + 0.1 if w.positive else value
    return out


# --------------------------------------------------------------------------------------------
# Slow formulations


def pascal_row(n: int) -> list[int]:
    """Row ``n`` of Pascal's triangle, by repeated addition of neighbours."""
    row = [1]
    for _ in range(n):
        row = [1] + [a + b for a, b in zip(row, row[1:])] + [1]
    return row


def tf_same_before(size: int, kernel: int, stride: int) -> int:
    """Zeros TensorFlow's SAME puts before an axis, in the form TensorFlow's documentation
    gives: the total is ``max(k - s, 0)`` when s divides n, else ``max(k - n % s, 0)``; the
    smaller half goes first."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2


def loop_depthwise(x, kernel, strides, before, out_hw):
    """Depthwise correlation of ``[B, H, W, C]`` with ``(kh, kw, C, 1)``. Output ``(i, j)`` reads
    input row ``i*sh + di - before[0]`` and column ``j*sw + dj - before[1]``; outside the
    input is zero. ``out_hw`` is the number of output positions."""
    batch, height, width, channels = x.shape
    kh, kw = kernel.shape[:2]
    (sh, sw), (top, left), (out_h, out_w) = strides, before, out_hw
    out = np.zeros((batch, out_h, out_w, channels))
    for b, i, j, c in itertools.product(range(batch), range(out_h), range(out_w), range(channels)):
        total = 0.0
        for di, dj in itertools.product(range(kh), range(kw)):
            row, col = i * sh + di - top, j * sw + dj - left
            if 0 <= row < height and 0 <= col < width:
                total += x[b, row, col, c] * kernel[di, dj, c, 0]
        out[b, i, j, c] = total
    return out


def loop_grouped_conv(x, kernel, strides, pad, groups):
    """Grouped correlation with ``pad`` zeros on every side. Output channel ``o`` is in group
    ``o // (filters / groups)`` and reads that group's input channels through ``kernel[..., c, o]``."""
    batch, height, width, channels = x.shape
    kh, kw, per_group, filters = kernel.shape
    sh, sw = strides
    out_h, out_w = (height + 2 * pad - kh) // sh + 1, (width + 2 * pad - kw) // sw + 1
    filters_per_group = filters // groups
    out = np.zeros((batch, out_h, out_w, filters))
    for b, i, j, o in itertools.product(range(batch), range(out_h), range(out_w), range(filters)):
        group = o // filters_per_group
        total = 0.0
        for di, dj, c in itertools.product(range(kh), range(kw), range(per_group)):
            row, col = i * sh + di - pad, j * sw + dj - pad
            if 0 <= row < height and 0 <= col < width:
                total += x[b, row, col, group * per_group + c] * kernel[di, dj, c, o]
        out[b, i, j, o] = total
    return out


def loop_batchnorm(x, weights, activation):
    out = np.zeros_like(x)
    for index in itertools.product(*map(range, x.shape)):
        c = index[-1]
        scale = weights["bn/gamma"][c] / math.sqrt(weights["bn/moving_variance"][c] + 1e-5)
        value = (x[index] - weights["bn/moving_mean"][c]) * scale + weights["bn/beta"][c]
        out[index] = scalar_activation(activation, value)
    return out


def scalar_activation(name, v):
    """The activations one float at a time, from their textbook definitions."""
    if name in (None, "linear"):
        return v
    sigmoid = 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
    return {
        "relu": lambda: max(v, 0.0),
        "relu6": lambda: min(max(v, 0.0), 6.0),
        "gelu": lambda: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
        "swish": lambda: v * sigmoid,
        "sigmoid": lambda: sigmoid,
        "tanh": lambda: math.tanh(v),
        "elu": lambda: v if v > 0 else math.expm1(v),
        "softplus": lambda: math.log1p(math.exp(-abs(v))) + max(v, 0.0),
    }[name]()


def loop_se(x, weights, se_ratio, activation, use_bias):
    batch, height, width, channels = x.shape
    reduction = math.floor(channels * se_ratio)
    out = np.zeros_like(x)
    for b in range(batch):
        means = [sum(x[b, i, j, c] for i in range(height) for j in range(width)) / (height * width) for c in range(channels)]
        hidden = []
        for r in range(reduction):
            total = sum(means[c] * weights["1_conv/kernel"][0, 0, c, r] for c in range(channels))
            total += weights["1_conv/bias"][r] if use_bias else 0.0
            hidden.append(scalar_activation(activation, total))
        for c in range(channels):
            total = sum(hidden[r] * weights["2_conv/kernel"][0, 0, r, c] for r in range(reduction))
            total += weights["2_conv/bias"][c] if use_bias else 0.0
            gate = 1.0 / (1.0 + math.exp(-total))
            for i, j in itertools.product(range(height), range(width)):
                out[b, i, j, c] = x[b, i, j, c] * gate
    return out


def as_pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# --------------------------------------------------------------------------------------------
# anti_alias_downsample


@pytest.mark.parametrize("k", range(1, 8))
def test_blur_kernel_is_the_outer_product_of_pascals_row(k):
    row = pascal_row(k - 1)
    kernel = aotnet.binomial_blur_kernel(k, 3)
    assert kernel.shape == (k, k, 3, 1)
    for i, j, c in itertools.product(range(k), range(k), range(3)):
        assert kernel[i, j, c, 0] == row[i] * row[j] / 2 ** (2 * (k - 1)), (k, i, j, c)
    assert math.isclose(kernel[:, :, 0, 0].sum(), 1.0, rel_tol=1e-15)


def test_blur_kernel_of_3_is_the_classic_filter():
    expected = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    np.testing.assert_array_equal(aotnet.binomial_blur_kernel(3, 1)[:, :, 0, 0], expected)


@pytest.mark.parametrize("trainable", [False, True])
def test_blur_kernel_is_the_declared_initial_value_and_fixed_unless_trainable(trainable):
    (weight,) = reference.weight_specs("anti_alias_downsample", (1, 6, 6, 4), kernel_size=(4, 4), trainable=trainable)
    assert weight.name == "anti_alias_down/depthwise_kernel" and weight.shape == (4, 4, 4, 1)
    assert weight.fixed is (not trainable)
    row = pascal_row(3)
    expected = np.array([[row[i] * row[j] / 64 for j in range(4)] for i in range(4)])
    for c in range(4):
        np.testing.assert_array_equal(weight.initial_value()[:, :, c, 0], expected)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_anti_alias_matches_loop_with_tf_same_padding(size, k, stride):
    rng = rng_for("anti_alias", size, k, stride)
    height, width = size, 9 - size  # non-square except at the middle; both parities on both axes
    x = rng.normal(size=(2, height, width, 2))
    kernel = rng.normal(size=(k, k, 2, 1))  # any kernel: the padding and indexing are under test
    got = reference.forward("anti_alias_downsample", x, weights={"anti_alias_down/depthwise_kernel": kernel}, kernel_size=k, strides=stride, trainable=True)
    out_hw = (math.ceil(height / stride), math.ceil(width / stride))
    before = (tf_same_before(height, k, stride), tf_same_before(width, k, stride))
    want = loop_depthwise(x, kernel, (stride, stride), before, out_hw)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_anti_alias_puts_the_odd_zero_at_the_bottom_and_right():
    # 4 rows, k 3, stride 2: one zero row in total, and it is below; output row 0 reads rows 0..2.
    x = np.zeros((1, 4, 4, 1))
    x[0, 0, 0, 0] = 1.0
    kernel = aotnet.binomial_blur_kernel(3, 1)
    out = reference.forward("anti_alias_downsample", x, weights={"anti_alias_down/depthwise_kernel": kernel})
    assert out.shape == (1, 2, 2, 1)
    # With no zero row on top, output (0, 0) is centred on input (1, 1) and sees (0, 0) at weight 1/16.
    assert out[0, 0, 0, 0] == 1 / 16
    np.testing.assert_array_equal(out[0, :, :, 0], [[1 / 16, 0], [0, 0]])


def test_anti_alias_ignores_padding():
    rng = rng_for("anti_alias padding")
    x = rng.normal(size=(1, 5, 4, 3))
    weights = {"anti_alias_down/depthwise_kernel": aotnet.binomial_blur_kernel(3, 3)}
    same = reference.forward("anti_alias_downsample", x, weights=weights, padding="SAME")
    np.testing.assert_array_equal(reference.forward("anti_alias_downsample", x, weights=weights, padding="VALID"), same)
    np.testing.assert_array_equal(reference.forward("anti_alias_downsample", x, weights=weights, padding=None), same)


def test_anti_alias_documented_shape_and_pair_forms():
    assert reference.output_shape("anti_alias_downsample", (2, 28, 28, 192), kernel_size=3, strides=2) == (2, 14, 14, 192)
    assert reference.output_shape("anti_alias_downsample", (1, 7, 5, 2), kernel_size=(5, 5), strides=(3, 3)) == (1, 3, 2, 2)
    assert reference.output_shape("anti_alias_downsample", (1, 1, 1, 2), kernel_size=5, strides=3) == (1, 1, 1, 2)


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"kernel_size": (3, 5)}, "anti_alias_downsample: kernel_size (3, 5) must have equal sides"),
        ({"kernel_size": [2, 2, 2]}, "anti_alias_downsample: kernel_size [2, 2, 2] must be a positive integer or a pair"),
        ({"strides": (2, 1)}, "anti_alias_downsample: strides (2, 1) must have equal sides for a depthwise convolution"),
        ({"strides": 1.5}, "anti_alias_downsample: strides 1.5 must be a positive integer"),
    ],
)
def test_anti_alias_rejections(config, fragment):
    with pytest.raises(reference.DomainError) as info:
        reference.validate("anti_alias_downsample", (1, 6, 6, 2), **config)
    assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------
# batchnorm_with_activation


@pytest.mark.parametrize("activation", [None, *aotnet.ACTIVATION_NAMES])
def test_batchnorm_matches_loop(activation):
    rng = rng_for("bn", activation)
    x = rng.normal(size=(2, 3, 2, 4)) * 3
    weights = random_weights("batchnorm_with_activation", x.shape, {"activation": activation}, rng)
    got = reference.forward("batchnorm_with_activation", x, weights=weights, activation=activation)
    np.testing.assert_allclose(got, loop_batchnorm(x, weights, activation), rtol=RTOL, atol=ATOL)


def test_batchnorm_zero_gamma_only_changes_the_initial_gamma():
    rng = rng_for("bn zero_gamma")
    x = rng.normal(size=(1, 2, 3, 5))
    weights = random_weights("batchnorm_with_activation", x.shape, {}, rng)
    np.testing.assert_array_equal(
        reference.forward("batchnorm_with_activation", x, weights=weights, zero_gamma=True),
        reference.forward("batchnorm_with_activation", x, weights=weights, zero_gamma=False),
    )
    for zero_gamma, gamma in [(False, 1.0), (True, 0.0)]:
        initial = {w.name: w.initial_value() for w in reference.weight_specs("batchnorm_with_activation", x.shape, zero_gamma=zero_gamma)}
        np.testing.assert_array_equal(initial["bn/gamma"], np.full(5, gamma))
        np.testing.assert_array_equal(initial["bn/beta"], np.zeros(5))
        np.testing.assert_array_equal(initial["bn/moving_mean"], np.zeros(5))
        np.testing.assert_array_equal(initial["bn/moving_variance"], np.ones(5))


def test_batchnorm_at_its_initial_weights_divides_by_sqrt_one_plus_epsilon():
    x = np.array([-2.0, 0.5, 3.0]).reshape(1, 1, 3, 1)
    initial = {w.name: w.initial_value() for w in reference.weight_specs("batchnorm_with_activation", x.shape, activation=None)}
    got = reference.forward("batchnorm_with_activation", x, weights=initial, activation=None)
    np.testing.assert_allclose(got.ravel(), [-2.0 / math.sqrt(1.00001), 0.5 / math.sqrt(1.00001), 3.0 / math.sqrt(1.00001)], rtol=1e-15)


# --------------------------------------------------------------------------------------------
# conv2d_no_bias


GROUPED_CASES = [
    # filters, kernel_size, strides, padding, groups, use_bias, input shape
    (4, 3, 1, "SAME", 1, False, (2, 5, 4, 3)),
    (6, 3, 2, "same", 2, True, (1, 6, 5, 4)),
    (6, (1, 3), (2, 1), "SAME", 3, False, (1, 4, 5, 6)),
    (4, (3, 2), (1, 3), "valid", 2, True, (2, 5, 7, 2)),
    (2, 2, 2, "SAME", 1, False, (1, 4, 5, 3)),
    (9, 4, 3, "Same", 3, True, (1, 7, 8, 3)),
    (5, 1, 1, "VALID", 1, False, (3, 1, 1, 2)),
]


@pytest.mark.parametrize("filters, kernel_size, strides, padding, groups, use_bias, shape", GROUPED_CASES)
def test_grouped_conv_matches_loop(filters, kernel_size, strides, padding, groups, use_bias, shape):
    rng = rng_for("conv", filters, kernel_size, strides, padding, groups, shape)
    config = {"filters": filters, "kernel_size": kernel_size, "strides": strides, "padding": padding, "groups": groups, "use_bias": use_bias}
    x = rng.normal(size=shape)
    weights = random_weights("conv2d_no_bias", shape, config, rng)
    got = reference.forward("conv2d_no_bias", x, weights=weights, **config)
    pad = max(as_pair(kernel_size)) // 2 if padding.lower() == "same" else 0
    want = loop_grouped_conv(x, weights["conv/kernel"], as_pair(strides), pad, groups)
    if use_bias:
        want = want + weights["conv/bias"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


DEPTHWISE_CASES = [
    # filters, kernel_size, strides, padding, groups, use_bias, input shape
    (3, 3, 2, "SAME", 3, True, (2, 5, 6, 6)),  # filters 3 but 6 channels in and out
    (1, 3, 1, "same", 1, False, (1, 4, 3, 4)),  # the default groups=1 with filters=1
    (4, (3, 1), 1, "VALID", 4, False, (1, 5, 2, 4)),
    (2, 2, (3, 3), "SAME", 2, True, (1, 7, 4, 5)),
    (1, 1, 1, "SAME", 0, True, (2, 1, 1, 3)),  # groups 0 is 1
]


@pytest.mark.parametrize("filters, kernel_size, strides, padding, groups, use_bias, shape", DEPTHWISE_CASES)
def test_depthwise_conv_matches_loop_and_keeps_the_input_channels(filters, kernel_size, strides, padding, groups, use_bias, shape):
    rng = rng_for("depthwise", filters, kernel_size, strides, padding, groups, shape)
    config = {"filters": filters, "kernel_size": kernel_size, "strides": strides, "padding": padding, "groups": groups, "use_bias": use_bias}
    channels = shape[-1]
    assert set(reference.weight_shapes("conv2d_no_bias", shape, **config)) == {"conv/depthwise_kernel"} | ({"conv/bias"} if use_bias else set())
    x = rng.normal(size=shape)
    weights = random_weights("conv2d_no_bias", shape, config, rng)
    got = reference.forward("conv2d_no_bias", x, weights=weights, **config)
    assert got.shape[-1] == channels
    kh, kw = as_pair(kernel_size)
    pad = max(kh, kw) // 2 if padding.lower() == "same" else 0
    (sh, sw) = as_pair(strides)
    out_hw = ((shape[1] + 2 * pad - kh) // sh + 1, (shape[2] + 2 * pad - kw) // sw + 1)
    want = loop_depthwise(x, weights["conv/depthwise_kernel"], (sh, sw), (pad, pad), out_hw)
    if use_bias:
        want = want + weights["conv/bias"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_depthwise_equals_grouped_conv_with_one_filter_per_group():
    rng = rng_for("depthwise vs grouped")
    x = rng.normal(size=(1, 5, 4, 3))
    depthwise = rng.normal(size=(3, 3, 3, 1))
    got = reference.forward("conv2d_no_bias", x, weights={"conv/depthwise_kernel": depthwise}, filters=3, kernel_size=3, groups=3, padding="SAME")
    want = loop_grouped_conv(x, depthwise.transpose(0, 1, 3, 2), (1, 1), 1, 3)  # (3, 3, 1, 3): one input channel per group
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("size", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_is_symmetric_where_tensorflow_would_not_be(size, stride):
    """conv2d_no_bias SAME pads k // 2 on both sides; anti_alias_downsample pads the TensorFlow
    way. With a blur kernel on both, they agree exactly when TensorFlow's padding is symmetric."""
    rng = rng_for("same vs tf", size, stride)
    x = rng.normal(size=(1, size, size, 1))
    blur = aotnet.binomial_blur_kernel(3, 1)
    symmetric = reference.forward("conv2d_no_bias", x, weights={"conv/depthwise_kernel": blur}, filters=1, kernel_size=3, strides=stride, padding="SAME")
    tensorflow = reference.forward("anti_alias_downsample", x, weights={"anti_alias_down/depthwise_kernel": blur}, strides=stride)
    want_symmetric = loop_depthwise(x, blur, (stride, stride), (1, 1), ((size - 1) // stride + 1,) * 2)
    np.testing.assert_allclose(symmetric, want_symmetric, rtol=RTOL, atol=ATOL)
    total = max(3 - stride, 0) if size % stride == 0 else max(3 - size % stride, 0)
    if total == 2:  # one zero on each side: the same windows
        np.testing.assert_allclose(tensorflow, symmetric, rtol=RTOL, atol=ATOL)
    elif tensorflow.shape == symmetric.shape:
        assert not np.allclose(tensorflow, symmetric), "TensorFlow SAME and symmetric padding should differ here"


@pytest.mark.parametrize(
    "config, shape, want",
    [
        ({"filters": 128, "kernel_size": 3, "strides": 2, "padding": "SAME"}, (2, 28, 28, 64), (2, 14, 14, 128)),
        ({"filters": 4, "kernel_size": (1, 3), "padding": "SAME"}, (1, 5, 5, 2), (1, 7, 5, 4)),  # max side pads both axes
        ({"filters": 4, "kernel_size": 2, "padding": "SAME"}, (1, 5, 6, 2), (1, 6, 7, 4)),  # an even kernel grows the map
        ({"filters": 4, "kernel_size": 3, "padding": "VALID"}, (1, 5, 6, 2), (1, 3, 4, 4)),
        ({"filters": 4, "kernel_size": 3, "strides": (2, 3), "padding": "same"}, (1, 5, 7, 2), (1, 3, 3, 4)),
        ({"filters": 3, "kernel_size": 3, "groups": 3}, (1, 5, 5, 6), (1, 3, 3, 6)),
        ({"filters": 1, "kernel_size": 1}, (1, 2, 2, 7), (1, 2, 2, 7)),
    ],
)
def test_conv_output_shapes(config, shape, want):
    assert reference.output_shape("conv2d_no_bias", shape, **config) == want


def test_conv_groups_zero_is_one():
    assert reference.validate("conv2d_no_bias", (1, 3, 3, 4), filters=2, kernel_size=1, groups=0)["groups"] == 1


@pytest.mark.parametrize(
    "config, shape, fragment",
    [
        ({"filters": 6, "kernel_size": 3, "groups": 4}, (1, 5, 5, 8), "conv2d_no_bias: filters 6 is not a multiple of groups 4"),
        ({"filters": 6, "kernel_size": 3, "groups": 2}, (1, 5, 5, 5), "conv2d_no_bias: input channels 5 is not a multiple of groups 2"),
        ({"filters": 4, "kernel_size": (3, 1)}, (1, 2, 5, 4), "conv2d_no_bias: height 2 plus padding 0 is smaller than the kernel's height 3"),
        ({"filters": 4, "kernel_size": (1, 4), "padding": "same"}, (1, 5, 1, 4), None),  # 1 + 2 * 2 >= 4: fits
        ({"filters": 4, "kernel_size": 5, "padding": "valid"}, (1, 5, 4, 4), "conv2d_no_bias: width 4 plus padding 0 is smaller than the kernel's width 5"),
        ({"filters": 2, "kernel_size": 3, "groups": 2, "strides": (1, 2)}, (1, 5, 5, 3), "conv2d_no_bias: strides (1, 2) must have equal sides"),
        ({"filters": 4, "kernel_size": 3, "groups": 2, "strides": (1, 2)}, (1, 5, 5, 4), None),  # grouped, not depthwise
        ({"filters": 4, "kernel_size": 3, "padding": "full"}, (1, 5, 5, 4), "conv2d_no_bias: padding 'full' must be 'VALID' or 'SAME'"),
        ({"filters": 0, "kernel_size": 3}, (1, 5, 5, 4), "conv2d_no_bias: filters 0 must be >= 1"),
        ({"filters": 2, "kernel_size": 3, "use_bias": 1}, (1, 5, 5, 4), "conv2d_no_bias: use_bias 1 must be True or False"),
    ],
)
def test_conv_rejections(config, shape, fragment):
    if fragment is None:
        reference.validate("conv2d_no_bias", shape, **config)
        return
    with pytest.raises(reference.DomainError) as info:
        reference.validate("conv2d_no_bias", shape, **config)
    assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------
# se_module


@pytest.mark.parametrize(
    "se_ratio, activation, use_bias, shape",
    [
        (0.25, "relu", True, (2, 3, 4, 8)),
        (0.29, "swish", True, (1, 2, 2, 10)),
        (0.5, None, False, (2, 1, 3, 4)),
        (1.5, "gelu", True, (1, 2, 1, 3)),
    ],
)
def test_se_module_matches_loop(se_ratio, activation, use_bias, shape):
    rng = rng_for("se", se_ratio, activation, use_bias, shape)
    config = {"se_ratio": se_ratio, "activation": activation, "use_bias": use_bias}
    x = rng.normal(size=shape)
    weights = random_weights("se_module", shape, config, rng)
    got = reference.forward("se_module", x, weights=weights, **config)
    np.testing.assert_allclose(got, loop_se(x, weights, se_ratio, activation, use_bias), rtol=RTOL, atol=ATOL)


def test_se_width_truncates_the_float_product():
    # 100 * 0.29 is 28.999999999999996 in floating point: the 2021 int() gives 28.
    shapes = reference.weight_shapes("se_module", (1, 2, 2, 100), se_ratio=0.29)
    assert shapes["1_conv/kernel"] == (1, 1, 100, 28)
    assert shapes["2_conv/kernel"] == (1, 1, 28, 100)
    assert reference.weight_shapes("se_module", (2, 28, 28, 192)) == {
        "1_conv/kernel": (1, 1, 192, 48),
        "1_conv/bias": (48,),
        "2_conv/kernel": (1, 1, 48, 192),
        "2_conv/bias": (192,),
    }


@pytest.mark.parametrize(
    "config, channels, fragment",
    [
        ({"se_ratio": 0.1}, 8, "se_module: se_ratio 0.1 leaves int(8 * 0.1) = 0 channels for 1_conv; it needs at least 1"),
        ({"se_ratio": 0.0}, 8, "se_module: se_ratio 0.0 leaves int(8 * 0.0) = 0 channels"),
        ({"se_ratio": 0.25}, 3, "se_module: se_ratio 0.25 leaves int(3 * 0.25) = 0 channels"),
        ({"se_ratio": float("inf")}, 3, "se_module: se_ratio inf must be a finite real"),
    ],
)
def test_se_rejections(config, channels, fragment):
    with pytest.raises(reference.DomainError) as info:
        reference.validate("se_module", (1, 2, 2, channels), **config)
    assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------
# Sampling: any answers within the asked ranges give a config and shapes in the domain


class FixedDraw:
    """Answers every request the same way: the low end, the high end, or a value clamped into
    range; choices take the matching option."""

    def __init__(self, pick):
        self.pick = pick

    def integer(self, label, low, high):
        return min(max(self.pick(low, high), low), high)

    def choice(self, label, options):
        options = tuple(options)
        return options[min(max(self.pick(0, len(options) - 1), 0), len(options) - 1)]

    def real(self, label, low, high):
        return float(min(max(self.pick(low, high), low), high))


class CountingDraw:
    """Distinct successive answers: the n-th request gets the n-th value in range, cycling."""

    def __init__(self):
        self.count = 0

    def _next(self, low, high):
        self.count += 1
        return low + self.count % (high - low + 1)

    def integer(self, label, low, high):
        return self._next(low, high)

    def choice(self, label, options):
        options = tuple(options)
        return options[self._next(0, len(options) - 1)]

    def real(self, label, low, high):
        self.count += 1
        return low + (high - low) * ((self.count * 0.37) % 1.0)


class RandomDraw:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def integer(self, label, low, high):
        return int(self.rng.integers(low, high + 1))

    def choice(self, label, options):
        options = tuple(options)
        return options[int(self.rng.integers(len(options)))]

    def real(self, label, low, high):
        return float(self.rng.uniform(low, high))


DRAWS = {
    "low": lambda: FixedDraw(lambda low, high: low),
    "high": lambda: FixedDraw(lambda low, high: high),
    "two": lambda: FixedDraw(lambda low, high: 2),
    "three": lambda: FixedDraw(lambda low, high: 3),
    "counting": CountingDraw,
}


@pytest.mark.parametrize("draw_name", DRAWS)
@pytest.mark.parametrize("layer", [spec.name for spec in aotnet.SPECS])
def test_sampler_stays_in_the_domain_for_edge_answers(layer, draw_name):
    spec = reference.spec(layer)
    for _ in range(5):  # the counting draw gives new answers each round
        draw = DRAWS[draw_name]()
        config = spec.draw_config(draw)
        shapes = spec.sample_input_shapes(config, draw)
        full = reference.validate(layer, *shapes, **config)
        for key, value in config.items():
            assert full[key] == value, f"{layer}: drawn {key}={value!r} normalised to {full[key]!r}"
        rng = np.random.default_rng(0)
        out = reference.forward(layer, *[rng.normal(size=s) for s in shapes], weights=random_weights(layer, shapes[0], config, rng), **config)
        assert out.shape == reference.output_shape(layer, *shapes, **config)


def test_conv_sampler_reaches_both_paths_and_pair_forms():
    seen = set()
    for seed in range(200):
        draw = RandomDraw(seed)
        config = reference.spec("conv2d_no_bias").draw_config(draw)
        seen.add("depthwise" if config["groups"] == config["filters"] else "grouped" if config["groups"] > 1 else "plain")
        seen.add(f"kernel {type(config['kernel_size']).__name__}")
        seen.add(f"padding {config['padding']}")
    assert {"depthwise", "grouped", "plain", "kernel int", "kernel tuple", "padding same", "padding SAME", "padding valid", "padding VALID"} <= seen, seen


# --------------------------------------------------------------------------------------------
# ChannelAffine's declared initial values (res_mlp)


@pytest.mark.parametrize("weight_init_value", [1, 0.1, -2.5])
def test_channel_affine_declares_its_initial_values(weight_init_value):
    initial = {w.name: w.initial_value() for w in reference.weight_specs("ChannelAffine", (1, 2, 2, 3), weight_init_value=weight_init_value)}
    np.testing.assert_array_equal(initial["weight"], np.full(3, float(weight_init_value)))
    np.testing.assert_array_equal(initial["bias"], np.zeros(3))
