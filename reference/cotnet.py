"""Blocks from CoTNet (cotnet): cot_attention."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference import _ops, _sampling
from reference._conv import conv2d, group_norm, pad, symmetric_padding
from reference._errors import reject
from reference._spec import Example, Input, Integer, LayerSpec, Param, Rejection, kernel, vector
from reference.resnest import ACTIVATION_DOMAIN, batch_norm_weights, batch_norm_with_activation, pointwise

REDUCTION = 8
"""The 2021 code's hard-coded reduction: the dynamic local kernels are shared by channel classes
``c mod (C / 8)``, and the GroupNorm has ``C / 8`` groups."""
KEY_GROUPS = 4
RADIX = 2
GROUP_NORM_EPSILON = 1e-5


def attention_channels(channels: int) -> int:
    """Width of the attention MLP: ``max(C * 2 // 4, 32)``."""
    return max(channels * RADIX // 4, 32)


def local_aggregation(value: np.ndarray, local_weights: np.ndarray, kernel_size: int) -> np.ndarray:
    """``out[b, y, x, c] = sum_{i, j} value_padded[b, y + i, x + j, c] * local_weights[b, y, x, (c mod G) * k*k + i*k + j]``.

    ``value`` is ``[B, H, W, C]``, zero-padded by ``k // 2`` on every side; ``local_weights`` is
    ``[B, H, W, G * k*k]`` with ``G = C / 8``: for every position, ``G`` kernels of ``k x k`` taps,
    kernel-major. Channel ``c`` (read as ``[8, G]``, ``c = r * G + g``) uses kernel ``g = c mod G``.
    """
    batch, height, width, channels = value.shape
    kernels = channels // REDUCTION
    windows = sliding_window_view(pad(value, symmetric_padding(kernel_size)), (kernel_size, kernel_size), axis=(1, 2))
    windows = windows.reshape(batch, height, width, REDUCTION, kernels, kernel_size, kernel_size)
    taps = local_weights.reshape(batch, height, width, kernels, kernel_size, kernel_size)
    return np.einsum("bhwrgij,bhwgij->bhwrg", windows, taps).reshape(batch, height, width, channels)


def cot_attention(inputs: np.ndarray, *, weights, kernel_size=3, activation="relu") -> np.ndarray:
    """Contextual Transformer attention (CoTNet) on ``[B, H, W, C]``; the output has the input's shape.

    With ``k = kernel_size`` (odd), ``G = C / 8`` and BatchNorms in inference form (moving
    statistics, epsilon 1e-5):

    1. Key: zero-pad ``k // 2`` on every side (nothing for ``k = 1``), a VALID ``k x k``
       convolution ``key_conv/kernel`` ``(k, k, C / 4, C)`` with 4 groups (input and output
       channels in 4 contiguous blocks), no bias; ``key_bn`` and ``activation``.
    2. Local kernels: concatenate ``[inputs, key]`` (``2C`` channels, inputs first);
       ``embed_ww_1_conv`` (1x1, no bias) to ``C / 2``, ``embed_ww_1_bn`` and ``activation``;
       ``embed_ww_2_conv`` (1x1 with bias) to ``G * k*k`` channels; GroupNorm
       ``embed_ww_group_norm`` with ``G`` groups of ``k*k`` contiguous channels, statistics over
       the ``H * W`` positions and the group's channels (biased variance, epsilon 1e-5), then a
       per-channel ``gamma``, ``beta``. Channel ``g * k*k + i*k + j`` is tap ``(i, j)`` of kernel ``g``.
    3. Value: ``embed_1_conv`` (1x1, no bias) and ``embed_1_bn`` (no activation).
    4. Local aggregation: every channel ``c`` of the value is
       convolved at each position with that position's own kernel ``c mod G`` over the
       ``k x k`` zero-padded neighbourhood (tap ``(i, j)`` reads ``value[y + i - k//2, x + j - k//2]``);
       then ``embed_2_bn`` and swish (``x * sigmoid(x)``, fixed). Call the result ``embed``.
    5. Attention: ``a = mean over H, W of (embed + key)`` ``[B, C]``; ``attn_se_1_conv`` (1x1 with
       bias) to ``max(2C // 4, 32)``, ``attn_se_bn`` and ``activation``; ``attn_se_2_conv`` (1x1
       with bias) to ``2C``; read as ``[C, 2]`` (channel ``2c + r``) and softmax over ``r``.
    6. Output ``[b, y, x, c] = embed[b, y, x, c] * p[b, 2c] + key[b, y, x, c] * p[b, 2c + 1]``.
    """
    batch, height, width, channels = inputs.shape
    key = conv2d(pad(inputs, symmetric_padding(kernel_size)), weights["key_conv/kernel"], groups=KEY_GROUPS)
    key = batch_norm_with_activation(key, weights, "key_", activation)

    query_key = np.concatenate([inputs, key], axis=-1)
    local_weights = batch_norm_with_activation(pointwise(query_key, weights, "embed_ww_1_conv", bias=False), weights, "embed_ww_1_", activation)
    local_weights = pointwise(local_weights, weights, "embed_ww_2_conv", bias=True)
    local_weights = group_norm(
        local_weights,
        weights["embed_ww_group_norm/gamma"],
        weights["embed_ww_group_norm/beta"],
        groups=channels // REDUCTION,
        epsilon=GROUP_NORM_EPSILON,
    )

    value = batch_norm_with_activation(pointwise(inputs, weights, "embed_1_conv", bias=False), weights, "embed_1_", None)
    embed = batch_norm_with_activation(local_aggregation(value, local_weights, kernel_size), weights, "embed_2_", "swish")

    attention = (embed + key).mean(axis=(1, 2))  # [B, C]
    attention = batch_norm_with_activation(pointwise(attention, weights, "attn_se_1_conv", bias=True), weights, "attn_se_", activation)
    attention = pointwise(attention, weights, "attn_se_2_conv", bias=True)
    attention = _ops.softmax(attention.reshape(batch, 1, 1, channels, RADIX), axis=-1)
    return embed * attention[..., 0] + key * attention[..., 1]


def _weights(config, input_shape):
    channels, size = input_shape[-1], config["kernel_size"]
    taps = size * size * channels // REDUCTION
    hidden = attention_channels(channels)
    return [
        kernel("key_conv/kernel", (size, size, channels // KEY_GROUPS, channels)),
        *batch_norm_weights("key_", channels),
        kernel("embed_ww_1_conv/kernel", (1, 1, 2 * channels, channels // 2)),
        *batch_norm_weights("embed_ww_1_", channels // 2),
        kernel("embed_ww_2_conv/kernel", (1, 1, channels // 2, taps)),
        vector("embed_ww_2_conv/bias", taps),
        # The normalised local kernels are contracted over k*k taps: drawn at std 1/k, the
        # aggregated values stay of order one, like a kernel's 1/sqrt(fan_in).
        vector("embed_ww_group_norm/gamma", taps, std=1.0 / size, initial=1.0),
        vector("embed_ww_group_norm/beta", taps, std=1.0 / size, initial=0.0),
        kernel("embed_1_conv/kernel", (1, 1, channels, channels)),
        *batch_norm_weights("embed_1_", channels),
        *batch_norm_weights("embed_2_", channels),
        kernel("attn_se_1_conv/kernel", (1, 1, channels, hidden)),
        vector("attn_se_1_conv/bias", hidden),
        *batch_norm_weights("attn_se_", hidden),
        kernel("attn_se_2_conv/kernel", (1, 1, hidden, RADIX * channels)),
        vector("attn_se_2_conv/bias", RADIX * channels),
    ]


def _check_config(config):
    if config["kernel_size"] % 2 == 0:
        reject(
            "cot_attention",
            "kernel_size",
            config["kernel_size"],
            "must be odd: the key is padded kernel_size // 2 on every side and must keep the input's height and width",
        )


def _check(config, input_shape):
    channels = input_shape[-1]
    if channels % REDUCTION:
        reject("cot_attention", "channels", channels, f"is not a multiple of {REDUCTION} (the hard-coded reduction; the key conv has {KEY_GROUPS} groups)")


PARAMS = (
    Param("kernel_size", 3, Integer(minimum=1), "Side of the key convolution and of the local kernels; odd."),
    Param("activation", "relu", ACTIVATION_DOMAIN, "Keras name of the activation after `key_bn`, `embed_ww_1_bn` and `attn_se_bn`; None for none."),
)


def _sample_config(draw):
    # Kernel 1 is left to the examples: see the conditioning note.
    return {
        "kernel_size": draw.choice("kernel_size", (3, 5)),
        "activation": ACTIVATION_DOMAIN.sample(draw, "activation"),
    }


def _sample_input_shapes(config, draw):
    # 16 channels first: two local kernels (channel c uses kernel c mod 2). With sides up to 8,
    # the largest maps meet 8 channels, a side equal to the channel count.
    channels = draw.choice("channels", (2 * REDUCTION, REDUCTION))
    return ((_sampling.batch(draw), draw.integer("height", 1, 8), draw.integer("width", 1, 8), channels),)


COT_ATTENTION = LayerSpec(
    name="cot_attention",
    family="cotnet",
    kind="block",
    summary="CoTNet contextual attention: a static key from a grouped conv, dynamic local kernels from [input, key], and a softmax over the two.",
    params=PARAMS,
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=cot_attention,
    weights=_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=_check,
    check_config=_check_config,
    sample_config=_sample_config,
    sample_input_shapes=_sample_input_shapes,
    examples=(
        Example(
            "readme",
            {"kernel_size": 3},
            ((2, 28, 28, 192),),
            source="README usage",
            documented_output_shape=(2, 28, 28, 192),
            documented_weights={
                "key_conv/kernel": (3, 3, 48, 192),
                "key_bn/gamma": (192,),
                "key_bn/beta": (192,),
                "key_bn/moving_mean": (192,),
                "key_bn/moving_variance": (192,),
                "embed_ww_1_conv/kernel": (1, 1, 384, 96),
                "embed_ww_1_bn/gamma": (96,),
                "embed_ww_1_bn/beta": (96,),
                "embed_ww_1_bn/moving_mean": (96,),
                "embed_ww_1_bn/moving_variance": (96,),
                "embed_ww_2_conv/kernel": (1, 1, 96, 216),
                "embed_ww_2_conv/bias": (216,),
                "embed_ww_group_norm/gamma": (216,),
                "embed_ww_group_norm/beta": (216,),
                "embed_1_conv/kernel": (1, 1, 192, 192),
                "embed_1_bn/gamma": (192,),
                "embed_1_bn/beta": (192,),
                "embed_1_bn/moving_mean": (192,),
                "embed_1_bn/moving_variance": (192,),
                "embed_2_bn/gamma": (192,),
                "embed_2_bn/beta": (192,),
                "embed_2_bn/moving_mean": (192,),
                "embed_2_bn/moving_variance": (192,),
                "attn_se_1_conv/kernel": (1, 1, 192, 96),
                "attn_se_1_conv/bias": (96,),
                "attn_se_bn/gamma": (96,),
                "attn_se_bn/beta": (96,),
                "attn_se_bn/moving_mean": (96,),
                "attn_se_bn/moving_variance": (96,),
                "attn_se_2_conv/kernel": (1, 1, 96, 384),
                "attn_se_2_conv/bias": (384,),
            },
            fixture=False,
        ),
        Example("readme_config", {"kernel_size": 3}, ((1, 4, 3, 192),), source="README usage"),
        Example("small_k3", {"kernel_size": 3}, ((2, 4, 5, 16),), source="spec"),
        Example("small_k1_swish", {"kernel_size": 1, "activation": "swish"}, ((1, 3, 2, 8),), source="spec"),
        Example("small_k1_two_kernels", {"kernel_size": 1, "activation": None}, ((2, 4, 5, 16),), source="spec"),
        Example("small_k5", {"kernel_size": 5}, ((2, 3, 6, 8),), source="spec"),
    ),
    rejections=(
        Rejection({"kernel_size": 4}, ((1, 4, 4, 16),), "cot_attention: kernel_size 4 must be odd"),
        Rejection({"kernel_size": 0}, ((1, 4, 4, 16),), "kernel_size 0 must be >= 1"),
        Rejection({"kernel_size": 3.0}, ((1, 4, 4, 16),), "kernel_size 3.0 must be an integer"),
        Rejection({"activation": "mish"}, ((1, 4, 4, 16),), "activation 'mish' must be one of"),
        Rejection({}, ((1, 4, 4, 12),), "cot_attention: channels 12 is not a multiple of 8"),
        Rejection({}, ((1, 4, 4, 4),), "cot_attention: channels 4 is not a multiple of 8"),
        Rejection({}, ((1, 16, 16),), "inputs shape (1, 16, 16) must have rank 4"),
    ),
    notes=(
        "The local kernels are shared by channel classes: channel `c` (read as `[8, C / 8]`) uses kernel "
        "`c mod (C / 8)`, as the 2021 code's reshape of the extracted patches to `[..., k*k, 8, C / 8]` does.",
        "The final softmax reads the `2C` attention channels as `[C, 2]` (channel `2c + r`, the radix minor), "
        "unlike split attention's `[groups, C // groups]`.",
        "An even kernel_size makes the padded key one row and column larger than the input, which the 2021 "
        "concatenation cannot take; the spec rejects it. Kernel 1 needs no padding.",
        "`activation=None` skips the three configurable activations; the activation after `embed_2_bn` is always swish.",
        "The GroupNorm came from tensorflow_addons in 2021; Keras 3's GroupNormalization computes the same thing.",
        "Conditioning, and why drawn cases use kernel_size 3 and 5 only: with kernel_size 1 every GroupNorm group is a "
        "single channel over the map, so the normalisation divides by that channel's spread over the positions. The "
        "BatchNorms and activations before it add per-channel offsets of order one (beta, moving mean, a sigmoid's 1/2) "
        "that do not shrink with the input and that the normalisation removes again, so the rounding of the offset "
        "(about u times its size) is amplified by offset / spread in every implementation: by 100 to 1000 on small maps, "
        "at small input magnitudes or where an activation saturates, far beyond float rounding. That is the conditioning "
        "of the 2021 math, not an implementation error. Kernel 1 is checked through its examples (and the loop self-tests); "
        "with kernel_size 3 or more each group spans k*k channels with their own biases, and the spread is of order one.",
    ),
)

SPECS = (COT_ATTENTION,)
