"""Keras 3 blocks from ResNeSt: rsoftmax, split_attention_conv2d.

Each block is a function of a Keras tensor with the 2021 signature. Layers are named
``name + "<sublayer>"`` (``1_g1_conv``, ``1_bn``, ``2_conv``...), so variables read
``<name>1_g1_conv/kernel``; with ``name`` None Keras picks unique names.
"""

from __future__ import annotations

import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes
from impls.tf.aotnet import batchnorm_with_activation, conv_kernel_initializer


def _padded_conv(inputs, filters, kernel_size, strides, name):
    """``kernel_size // 2`` zeros on every side (layer ``name + "pad"``), then a VALID
    convolution without bias (``name + "conv"``). Always a ``Conv2D``: the 2021 resnest code has
    its own conv helper, without aotnet's switch to a depthwise convolution when groups == filters."""
    if kernel_size // 2:
        inputs = keras.layers.ZeroPadding2D(padding=kernel_size // 2, name=name and name + "pad")(inputs)
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, use_bias=False, kernel_initializer=conv_kernel_initializer(), name=name and name + "conv"
    )(inputs)


def rsoftmax(inputs, groups, name=None):
    """Radix softmax of ``[batch, 1, 1, channels]`` logits: for ``groups > 1`` the channels are
    read as ``[groups, channels // groups]`` and softmaxed across the groups, in place; for one
    group, a sigmoid (layer ``name + "sigmoid"``). ``name`` is an addition to the 2021 signature,
    for naming like the other blocks; the layer has no weights."""
    config = checked_config("rsoftmax", groups=groups)
    checked_shapes("rsoftmax", config, inputs.shape, need=(1, 2, 3))
    groups, channels = config["groups"], inputs.shape[-1]
    if groups == 1:
        return keras.layers.Activation("sigmoid", name=name and name + "sigmoid")(inputs)
    radices = ops.softmax(ops.reshape(inputs, (-1, 1, groups, channels // groups)), axis=2)
    return ops.reshape(radices, (-1, 1, 1, channels))


def _sum_of_groups(inputs, groups):
    """``[..., groups * n]`` -> ``[..., n]``: the sum of the ``groups`` contiguous channel blocks."""
    return ops.sum(ops.stack(ops.split(inputs, groups, axis=-1), axis=0), axis=0)


def split_attention_conv2d(inputs, filters, kernel_size=3, strides=1, groups=2, activation="relu", name=None):
    """ResNeSt split attention on ``[batch, height, width, channels]``.

    One convolution per group of ``channels // groups`` input channels (``name + "1_g{i}_conv"``,
    ``name + "1_conv"`` for one group), each padded ``kernel_size // 2`` on every side;
    ``1_bn`` and ``activation``; the groups' sum, averaged over the map, goes through
    ``2_conv``, ``2_bn`` + ``activation`` and ``3_conv`` to :func:`rsoftmax` weights that mix
    the groups back to ``filters`` channels.
    """
    config = checked_config(
        "split_attention_conv2d", filters=filters, kernel_size=kernel_size, strides=strides, groups=groups, activation=activation
    )
    checked_shapes("split_attention_conv2d", config, inputs.shape)
    filters, groups, activation = config["filters"], config["groups"], config["activation"]
    kernel_size, strides = config["kernel_size"], config["strides"]
    if groups == 1:
        logits = _padded_conv(inputs, filters, kernel_size, strides, name=name and name + "1_")
    else:
        per_group = ops.split(inputs, groups, axis=-1)
        logits = ops.concatenate(
            [_padded_conv(part, filters, kernel_size, strides, name=name and f"{name}1_g{i}_") for i, part in enumerate(per_group, start=1)],
            axis=-1,
        )
    logits = batchnorm_with_activation(logits, activation=activation, name=name and name + "1_")

    gap = _sum_of_groups(logits, groups) if groups > 1 else logits
    gap = ops.mean(gap, axis=(1, 2), keepdims=True)
    inner = max(inputs.shape[-1] * groups // 4, 32)
    attention = keras.layers.Conv2D(inner, 1, kernel_initializer=conv_kernel_initializer(), name=name and name + "2_conv")(gap)
    attention = batchnorm_with_activation(attention, activation=activation, name=name and name + "2_")
    attention = keras.layers.Conv2D(filters * groups, 1, kernel_initializer=conv_kernel_initializer(), name=name and name + "3_conv")(attention)
    attention = rsoftmax(attention, groups, name=name and name + "rsoftmax_")
    out = logits * attention
    return _sum_of_groups(out, groups) if groups > 1 else out


__all__ = ["rsoftmax", "split_attention_conv2d"]
