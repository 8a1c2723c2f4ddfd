"""Blocks from ResNeSt (resnest): rsoftmax, split_attention_conv2d."""

from __future__ import annotations

import numpy as np

from reference import _ops, _sampling
from reference._conv import batch_norm, conv2d, output_size, pad, symmetric_padding
from reference._errors import reject
from reference._spec import REQUIRED, Example, Input, Integer, LayerSpec, Maybe, OneOf, Param, Rejection, Weight, kernel, vector

ACTIVATION_DOMAIN = Maybe(OneOf(tuple(_ops.ACTIVATIONS)))
"""A Keras activation name, or None for none (the 2021 code skips the activation when it is falsy)."""


# --------------------------------------------------------------------------------------------
# BatchNorm with activation, as the 2021 conv families write it


def batch_norm_weights(prefix: str, channels: int) -> list[Weight]:
    """``<prefix>bn/gamma, beta, moving_mean, moving_variance``, with the values a freshly
    built Keras ``BatchNormalization`` holds (1, 0, 0, 1)."""
    return [
        vector(f"{prefix}bn/gamma", channels, initial=1.0),
        vector(f"{prefix}bn/beta", channels, initial=0.0),
        vector(f"{prefix}bn/moving_mean", channels, initial=0.0),
        vector(f"{prefix}bn/moving_variance", channels, positive=True, initial=1.0),
    ]


def batch_norm_with_activation(x: np.ndarray, weights, prefix: str, activation: str | None) -> np.ndarray:
    """Inference BatchNorm (moving statistics, epsilon 1e-5) over the last axis with the weights
    ``<prefix>bn/*``, then ``activation`` unless it is None."""
    x = batch_norm(
        x,
        weights[f"{prefix}bn/gamma"],
        weights[f"{prefix}bn/beta"],
        weights[f"{prefix}bn/moving_mean"],
        weights[f"{prefix}bn/moving_variance"],
        epsilon=1e-5,
    )
    return x if activation is None else _ops.activation(activation, x, overwrite=True)


def pointwise(x: np.ndarray, weights, name: str, bias: bool) -> np.ndarray:
    """A 1x1 ``Conv2D`` with kernel ``<name>/kernel`` ``(1, 1, in, out)``: a matmul over the
    channel axis, plus ``<name>/bias`` when ``bias``."""
    out = x @ weights[f"{name}/kernel"][0, 0]
    return out + weights[f"{name}/bias"] if bias else out


# --------------------------------------------------------------------------------------------
# rsoftmax


def rsoftmax(inputs: np.ndarray, *, weights, groups) -> np.ndarray:
    """Radix softmax of ``[B, 1, 1, C]`` attention logits (ResNeSt); no weights.

    ``groups == 1``: the elementwise sigmoid. ``groups = g > 1``: the channels are read as
    ``[g, C // g]``, channel ``r * (C // g) + c`` being radix ``r`` of column ``c``; the softmax
    runs over the ``g`` radices of each column (``out[r*(C//g) + c] = exp(x[r*(C//g) + c]) /
    sum_s exp(x[s*(C//g) + c])``) and the output keeps the input's channel order (the 2021 code
    reshapes to ``[-1, 1, g, C // g]``, softmaxes axis 2 and reshapes back, with no transpose).
    """
    if groups == 1:
        return _ops.sigmoid(inputs)
    batch, _, _, channels = inputs.shape
    radices = inputs.reshape(batch, groups, channels // groups)
    if groups == 2:
        return _two_radix_softmax(radices).reshape(inputs.shape)
    return _ops.softmax(radices, axis=1).reshape(inputs.shape)


def _two_radix_softmax(radices: np.ndarray) -> np.ndarray:
    """:func:`_ops.softmax` over axis 1 of ``[B, 2, W]``, bitwise, with one exp per column
    instead of two (float64 ``exp`` is most of this layer's time).

    Of the two differences from the column maximum, one is 0 (exp 1) and the other is their sum,
    so ``exp(sum)`` is taken once and ``maximum(exp(sum), difference == 0)`` gives both exps
    exactly: 1 for the zero difference, ``exp(sum) <= 1`` for the other, NaN where the softmax
    gives NaN (an infinite maximum makes its difference NaN). The sum and the division are the
    softmax's own.
    """
    top = np.maximum(radices[:, :1], radices[:, 1:])
    shifted = radices - top
    is_top = shifted == 0.0
    exp_of_sum = np.add(shifted[:, :1], shifted[:, 1:], out=top)
    np.exp(exp_of_sum, out=exp_of_sum)
    exps = np.maximum(exp_of_sum, is_top, out=shifted)
    exps /= np.add(exps[:, :1], exps[:, 1:], out=exp_of_sum)
    return exps


def _rsoftmax_check(config, input_shape):
    batch, height, width, channels = input_shape
    if (height, width) != (1, 1):
        reject("rsoftmax", "inputs shape", input_shape, "must be [batch, 1, 1, channels]: rsoftmax takes pooled attention logits")
    if channels % config["groups"]:
        reject("rsoftmax", "channels", channels, f"is not a multiple of groups {config['groups']}")


def _rsoftmax_sample_input_shapes(config, draw):
    channels = config["groups"] * draw.integer("channels per group", 1, 5)
    return ((_sampling.batch(draw), 1, 1, channels),)


RSOFTMAX = LayerSpec(
    name="rsoftmax",
    family="resnest",
    kind="block",
    summary="Radix softmax of pooled split-attention logits: a softmax across the groups of each channel column, or a sigmoid for one group.",
    params=(Param("groups", REQUIRED, Integer(minimum=1, sample_range=(1, 4)), "Radix: the number of groups the channels are split into."),),
    inputs=(Input("inputs", "feature_map", "pooled attention logits [batch, 1, 1, channels]"),),
    output_kind="feature_map",
    forward=rsoftmax,
    weights=lambda config, input_shape: [],
    output_shape=lambda config, input_shape: input_shape,
    check=_rsoftmax_check,
    sample_input_shapes=_rsoftmax_sample_input_shapes,
    examples=(
        Example(
            "documented",
            {"groups": 2},
            ((2, 1, 1, 98),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 1, 1, 98),
            documented_weights={},
        ),
        Example("small_sigmoid", {"groups": 1}, ((3, 1, 1, 5),), source="spec"),
        Example("small_three_groups", {"groups": 3}, ((2, 1, 1, 12),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((2, 1, 1, 8),), "config parameter 'groups' is required"),
        Rejection({"groups": 0}, ((2, 1, 1, 8),), "groups 0 must be >= 1"),
        Rejection({"groups": 3}, ((2, 1, 1, 8),), "rsoftmax: channels 8 is not a multiple of groups 3"),
        Rejection({"groups": 2}, ((2, 3, 3, 8),), "rsoftmax: inputs shape (2, 3, 3, 8) must be [batch, 1, 1, channels]"),
        Rejection({"groups": 1}, ((2, 1, 2, 8),), "rsoftmax: inputs shape (2, 1, 2, 8) must be [batch, 1, 1, channels]"),
        Rejection({"groups": 2}, ((2, 8),), "inputs shape (2, 8) must have rank 4"),
    ),
    notes=(
        "The 2021 code reshapes to `[-1, 1, groups, C // groups]`, so on a larger map it would silently fold the "
        "spatial positions into the batch axis; this spec pins the domain to `[batch, 1, 1, channels]` (also for "
        "groups 1, where the sigmoid would not care) and rejects other maps.",
        "The channel order is `[groups, C // groups]` (radix major); timm's `RadixSoftmax` with cardinality 1 "
        "uses the same order.",
    ),
)


# --------------------------------------------------------------------------------------------
# split_attention_conv2d


def inner_channels(in_channels: int, groups: int) -> int:
    """Width of the attention MLP: ``max(in_channels * groups // 4, 32)``."""
    return max(in_channels * groups // 4, 32)


def grouped_kernel(weights, groups: int) -> np.ndarray:
    """The per-group kernels ``1_g{i}_conv/kernel`` ``(k, k, C / g, filters)``, i = 1..g, joined
    along the output axis into one grouped-conv kernel ``(k, k, C / g, g * filters)``
    (``1_conv/kernel`` itself when ``groups`` is 1)."""
    if groups == 1:
        return weights["1_conv/kernel"]
    return np.concatenate([weights[f"1_g{i}_conv/kernel"] for i in range(1, groups + 1)], axis=-1)


def split_attention_conv2d(inputs: np.ndarray, *, weights, filters, kernel_size=3, strides=1, groups=2, activation="relu") -> np.ndarray:
    """Split attention convolution (ResNeSt) of ``[B, H, W, C]`` to ``[B, H', W', filters]``.

    With ``g = groups``, ``k = kernel_size``, ``s = strides``:

    1. Grouped convolution: zero-pad ``k // 2`` on every side (also for even ``k`` and for
       ``s = 2``), then a VALID convolution with stride ``s``, so ``H' = (H + 2*(k//2) - k) // s + 1``
       (the same for W). The input channels are split into ``g`` contiguous blocks of ``C / g``;
       block ``i`` (1-based) goes through its own kernel ``1_g{i}_conv/kernel``
       ``(k, k, C / g, filters)`` and the ``g`` results are concatenated, so channel
       ``(i - 1) * filters + f`` of the ``g * filters`` logits is filter ``f`` of group ``i``.
       With ``g == 1`` it is one convolution ``1_conv/kernel`` ``(k, k, C, filters)``. No bias.
    2. ``1_bn`` (BatchNorm, epsilon 1e-5, moving statistics) and ``activation``.
    3. Gap: the ``g`` blocks of ``filters`` channels are added, then averaged over the
       ``H' * W'`` positions: ``[B, filters]``.
    4. ``2_conv`` (1x1 with bias) to ``max(C * g // 4, 32)`` channels, ``2_bn`` and
       ``activation``, then ``3_conv`` (1x1 with bias) to ``g * filters`` channels.
    5. ``rsoftmax`` with ``g`` groups: channel ``r * filters + f`` is softmaxed over ``r``
       (a sigmoid when ``g == 1``).
    6. Output ``[b, y, x, f] = sum_r attention[b, r * filters + f] * logits[b, y, x, r * filters + f]``
       with the activated logits of step 2.
    """
    padded = pad(inputs, symmetric_padding(kernel_size))
    logits = conv2d(padded, grouped_kernel(weights, groups), strides=strides, groups=groups)
    logits = batch_norm_with_activation(logits, weights, "1_", activation)
    batch, height, width, _ = logits.shape
    radices = logits.reshape(batch, height, width, groups, filters)

    gap = radices.sum(axis=3).mean(axis=(1, 2))  # [B, filters]
    attention = batch_norm_with_activation(pointwise(gap, weights, "2_conv", bias=True), weights, "2_", activation)
    attention = pointwise(attention, weights, "3_conv", bias=True)  # [B, groups * filters]
    attention = rsoftmax(attention.reshape(batch, 1, 1, groups * filters), weights={}, groups=groups)
    return (radices * attention.reshape(batch, 1, 1, groups, filters)).sum(axis=3)


def _split_attention_weights(config, input_shape):
    channels = input_shape[-1]
    filters, groups, size = config["filters"], config["groups"], config["kernel_size"]
    inner = inner_channels(channels, groups)
    if groups == 1:
        convs = [kernel("1_conv/kernel", (size, size, channels, filters))]
    else:
        convs = [kernel(f"1_g{i}_conv/kernel", (size, size, channels // groups, filters)) for i in range(1, groups + 1)]
    return [
        *convs,
        *batch_norm_weights("1_", groups * filters),
        kernel("2_conv/kernel", (1, 1, filters, inner)),
        vector("2_conv/bias", inner),
        *batch_norm_weights("2_", inner),
        kernel("3_conv/kernel", (1, 1, inner, groups * filters)),
        vector("3_conv/bias", groups * filters),
    ]


def _split_attention_output_shape(config, input_shape):
    batch, height, width, _ = input_shape
    size, stride = config["kernel_size"], config["strides"]
    padded = 2 * (size // 2)
    return (batch, output_size(height + padded, size, stride), output_size(width + padded, size, stride), config["filters"])


def _split_attention_check(config, input_shape):
    channels = input_shape[-1]
    if channels % config["groups"]:
        reject("split_attention_conv2d", "channels", channels, f"is not a multiple of groups {config['groups']}")


SPLIT_ATTENTION_PARAMS = (
    Param("filters", REQUIRED, Integer(minimum=1, sample_range=(1, 6)), "Output channels (per group before the groups are summed)."),
    Param("kernel_size", 3, Integer(minimum=1, sample_range=(1, 4)), "Side of the square grouped-conv kernel; the input is padded `kernel_size // 2` on every side."),
    Param("strides", 1, Integer(minimum=1, sample_range=(1, 2)), "Stride of the grouped convolution."),
    Param("groups", 2, Integer(minimum=1, sample_range=(1, 3)), "Radix: the number of input channel groups, each with its own convolution."),
    Param("activation", "relu", ACTIVATION_DOMAIN, "Keras name of the activation after `1_bn` and `2_bn`; None for none."),
)


def _split_attention_sample_config(draw):
    return {p.name: p.domain.sample(draw, p.name) for p in SPLIT_ATTENTION_PARAMS}


def _split_attention_sample_input_shapes(config, draw):
    channels = config["groups"] * draw.integer("channels per group", 1, 4)
    return ((_sampling.batch(draw), draw.integer("height", 1, 7), draw.integer("width", 1, 7), channels),)


SPLIT_ATTENTION_CONV2D = LayerSpec(
    name="split_attention_conv2d",
    family="resnest",
    kind="block",
    summary="ResNeSt split attention: a grouped convolution whose groups are mixed by a radix softmax over their pooled sum.",
    params=SPLIT_ATTENTION_PARAMS,
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=split_attention_conv2d,
    weights=_split_attention_weights,
    output_shape=_split_attention_output_shape,
    check=_split_attention_check,
    sample_config=_split_attention_sample_config,
    sample_input_shapes=_split_attention_sample_input_shapes,
    examples=(
        Example(
            "readme",
            {"filters": 384},
            ((2, 28, 28, 192),),
            source="README usage",
            documented_output_shape=(2, 28, 28, 384),
            documented_weights={
                "1_g1_conv/kernel": (3, 3, 96, 384),
                "1_g2_conv/kernel": (3, 3, 96, 384),
                "1_bn/gamma": (768,),
                "1_bn/beta": (768,),
                "1_bn/moving_mean": (768,),
                "1_bn/moving_variance": (768,),
                "2_conv/kernel": (1, 1, 384, 96),
                "2_conv/bias": (96,),
                "2_bn/gamma": (96,),
                "2_bn/beta": (96,),
                "2_bn/moving_mean": (96,),
                "2_bn/moving_variance": (96,),
                "3_conv/kernel": (1, 1, 96, 768),
                "3_conv/bias": (768,),
            },
            fixture=False,
        ),
        Example("readme_config", {"filters": 384}, ((1, 3, 4, 192),), source="README usage"),
        Example("small_two_groups", {"filters": 5, "groups": 2}, ((2, 5, 4, 6),), source="spec"),
        Example("small_one_group_stride_2", {"filters": 4, "groups": 1, "strides": 2, "activation": "swish"}, ((1, 5, 6, 3),), source="spec"),
        Example("small_three_groups_k2_stride_2", {"filters": 3, "kernel_size": 2, "strides": 2, "groups": 3}, ((2, 7, 4, 9),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((1, 4, 4, 8),), "config parameter 'filters' is required"),
        Rejection({"filters": 0}, ((1, 4, 4, 8),), "filters 0 must be >= 1"),
        Rejection({"filters": 4, "kernel_size": 0}, ((1, 4, 4, 8),), "kernel_size 0 must be >= 1"),
        Rejection({"filters": 4, "kernel_size": (3, 3)}, ((1, 4, 4, 8),), "kernel_size (3, 3) must be an integer"),
        Rejection({"filters": 4, "strides": 0}, ((1, 4, 4, 8),), "strides 0 must be >= 1"),
        Rejection({"filters": 4, "groups": 0}, ((1, 4, 4, 8),), "groups 0 must be >= 1"),
        Rejection({"filters": 4, "activation": "mish"}, ((1, 4, 4, 8),), "activation 'mish' must be one of"),
        Rejection({"filters": 4, "groups": 3}, ((1, 4, 4, 8),), "split_attention_conv2d: channels 8 is not a multiple of groups 3"),
        Rejection({"filters": 4}, ((1, 16, 8),), "inputs shape (1, 16, 8) must have rank 4"),
    ),
    notes=(
        "The 2021 code runs one convolution per group (`1_g1_conv`, `1_g2_conv`, ...) on contiguous channel "
        "blocks and concatenates them; that is exactly a grouped convolution with `groups` groups, which is how "
        "the PyTorch module (and timm's `SplitAttn`) computes it.",
        "`kernel_size` is a single integer (the 2021 padding `kernel_size // 2` fails on a tuple). An even "
        "kernel pads `k // 2` on both sides too and so grows the map by one; the spec keeps that 2021 behaviour.",
        "`activation=None` skips the activation after both BatchNorms, as the 2021 code does for any falsy value.",
    ),
)

SPECS = (RSOFTMAX, SPLIT_ATTENTION_CONV2D)
