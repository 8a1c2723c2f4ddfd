"""Keras 3 blocks from CoTNet: cot_attention.

Layers are named ``name + "<sublayer>"`` (``key_conv``, ``embed_ww_group_norm``, ``attn_se_2_conv``...),
so variables read ``<name>key_conv/kernel``; with ``name`` None Keras picks unique names.
"""

from __future__ import annotations

import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes
from impls.tf._layers import Conv2D
from impls.tf.aotnet import batchnorm_with_activation, conv_kernel_initializer

REDUCTION = 8
RADIX = 2


def _conv(inputs, filters, kernel_size, name, use_bias=False, groups=1):
    """A VALID ``Conv2D`` named ``name + "conv"``. Always a ``Conv2D``: the 2021 cotnet code has
    its own conv helper, without aotnet's switch to a depthwise convolution when groups == filters
    (a single local-kernel channel, k=1 and C=8, must stay a Conv2D)."""
    return Conv2D(
        filters, kernel_size, use_bias=use_bias, groups=groups, kernel_initializer=conv_kernel_initializer(), name=name and name + "conv"
    )(inputs)


def cot_attention(inputs, kernel_size=3, activation="relu", name=None):
    """Contextual Transformer attention on ``[batch, height, width, channels]`` (channels a
    multiple of 8, odd ``kernel_size``, known height and width); the output has the input's shape.

    A 4-group ``k x k`` key convolution; per-position local kernels from ``[inputs, key]``
    (1x1 convs and a GroupNorm of ``channels // 8`` groups, epsilon 1e-5) applied to a 1x1 value
    over each ``k x k`` neighbourhood, channel ``c`` using kernel ``c mod (channels // 8)``; then
    a softmax over the pair (local result, key) per channel, whose logits are read as
    ``[channels, 2]``.
    """
    config = checked_config("cot_attention", kernel_size=kernel_size, activation=activation)
    checked_shapes("cot_attention", config, inputs.shape, need=(1, 2, 3))
    _, height, width, channels = inputs.shape
    size, activation = config["kernel_size"], config["activation"]
    half, kernels = size // 2, channels // REDUCTION

    key_input = keras.layers.ZeroPadding2D(padding=half, name=name and name + "conv_pad")(inputs) if half else inputs
    key = _conv(key_input, channels, size, groups=4, name=name and name + "key_")
    key = batchnorm_with_activation(key, activation=activation, name=name and name + "key_")

    query_key = keras.layers.Concatenate(axis=-1)([inputs, key])
    local_weights = _conv(query_key, channels // 2, 1, name=name and name + "embed_ww_1_")
    local_weights = batchnorm_with_activation(local_weights, activation=activation, name=name and name + "embed_ww_1_")
    local_weights = _conv(local_weights, size * size * kernels, 1, use_bias=True, name=name and name + "embed_ww_2_")
    local_weights = keras.layers.GroupNormalization(groups=kernels, epsilon=1e-5, name=name and name + "embed_ww_group_norm")(local_weights)
    # Channel g * k*k + tap -> [..., tap, 1, g]: broadcast over the 8 channels sharing kernel g.
    local_weights = ops.reshape(local_weights, (-1, height, width, kernels, size * size))
    local_weights = ops.expand_dims(ops.transpose(local_weights, (0, 1, 2, 4, 3)), axis=-2)

    value = _conv(inputs, channels, 1, name=name and name + "embed_1_")
    value = batchnorm_with_activation(value, activation=None, name=name and name + "embed_1_")
    value = keras.layers.ZeroPadding2D(padding=half, name=name and name + "embed_pad")(value)
    # The k x k neighbourhoods, tap-major; keras.ops.image.extract_patches would round float64 through float32.
    patches = ops.stack([value[:, i : i + height, j : j + width, :] for i in range(size) for j in range(size)], axis=3)
    patches = ops.reshape(patches, (-1, height, width, size * size, REDUCTION, kernels))
    embed = ops.reshape(ops.sum(patches * local_weights, axis=3), (-1, height, width, channels))
    embed = batchnorm_with_activation(embed, activation="swish", name=name and name + "embed_2_")

    attention = ops.mean(embed + key, axis=(1, 2), keepdims=True)
    attention = _conv(attention, max(channels * RADIX // 4, 32), 1, use_bias=True, name=name and name + "attn_se_1_")
    attention = batchnorm_with_activation(attention, activation=activation, name=name and name + "attn_se_")
    attention = _conv(attention, channels * RADIX, 1, use_bias=True, name=name and name + "attn_se_2_")
    attention = ops.softmax(ops.reshape(attention, (-1, 1, 1, channels, RADIX)), axis=-1)
    return ops.sum(ops.stack([embed, key], axis=-1) * attention, axis=-1)


__all__ = ["cot_attention"]
