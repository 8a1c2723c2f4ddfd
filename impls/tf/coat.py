"""Keras 3 layers and blocks from CoaT: ConvPositionalEncoding, ConvRelativePositionalEncoding,
layer_norm.

Both positional encodings read token 0 as the class token and tokens ``1 .. N-1`` as a square
grid, row-major. Their depthwise convolutions pad ``kernel_size // 2`` zeros on every side,
which for the odd kernels the spec allows is exactly TensorFlow's "same" padding at stride 1.
"""

from __future__ import annotations

import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes, fix_input_sizes
from impls.tf._layers import CenteredLayerNormalization
from reference.coat import LAYER_NORM_EPSILON, grid_side


def depthwise_conv_same(grid, depthwise_kernel, bias):
    """Depthwise convolution of a ``[B, side, side, C]`` grid, padded with ``k // 2`` zeros on
    every side (TensorFlow's "same" for an odd ``k``), plus the bias."""
    return ops.depthwise_conv(grid, depthwise_kernel, strides=1, padding="same", data_format="channels_last") + bias


class GridDepthwiseConv(keras.layers.Layer):
    """One group's depthwise convolution with bias, with the Keras 2 variable names
    ``depthwise_kernel`` and ``bias`` (Keras 3's DepthwiseConv2D calls its kernel ``kernel``)."""

    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.depthwise_kernel = self.add_weight(name="depthwise_kernel", shape=(self.kernel_size, self.kernel_size, channels, 1))
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, grid):
        return depthwise_conv_same(grid, self.depthwise_kernel, self.bias)


@keras.saving.register_keras_serializable(package="attnconf")
class ConvPositionalEncoding(keras.layers.Layer):
    """``[batch, tokens, channels]`` -> same: the class token passes through; the grid tokens get
    a depthwise convolution of the grid (with bias) added to them.

    The kernel and bias are the layer's own variables, ``<layer>/depthwise_kernel`` and
    ``<layer>/bias``, as in 2021 (no sublayer level in the path).
    """

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self._spec_config = checked_config("ConvPositionalEncoding", kernel_size=kernel_size)
        self.kernel_size = self._spec_config["kernel_size"]

    def build(self, input_shape):
        checked_shapes("ConvPositionalEncoding", self._spec_config, input_shape, need=(1, 2))
        _, tokens, self.channels = (int(d) if d is not None else None for d in input_shape)
        self.side = grid_side("ConvPositionalEncoding", tokens)
        fix_input_sizes(self, input_shape, axes=(1, 2))
        self.depthwise_kernel = self.add_weight(name="depthwise_kernel", shape=(self.kernel_size, self.kernel_size, self.channels, 1))
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, inputs):
        grid = ops.reshape(inputs[:, 1:], (-1, self.side, self.side, self.channels))
        encoded = grid + depthwise_conv_same(grid, self.depthwise_kernel, self.bias)
        encoded = ops.reshape(encoded, (-1, self.side * self.side, self.channels))
        return ops.concatenate([inputs[:, :1], encoded], axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), **self._spec_config}


@keras.saving.register_keras_serializable(package="attnconf")
class ConvRelativePositionalEncoding(keras.layers.Layer):
    """``call(query, value)``, both ``[batch, heads, tokens, depth]`` -> same shape: the query
    times a depthwise convolution of the value grid, one kernel size per group of heads; the
    class-token row is zero.

    Group ``s`` (1-based) is the sublayer ``depth_conv_<s>``, a depthwise convolution over the
    channels ``head * depth + j`` of its heads, so its variables are
    ``<layer>/depth_conv_<s>/depthwise_kernel`` and ``.../bias``.
    """

    def __init__(self, head_splits=[2, 3, 3], head_kernel_size=[3, 5, 7], **kwargs):  # the 2021 defaults; never mutated
        super().__init__(**kwargs)
        self._spec_config = checked_config("ConvRelativePositionalEncoding", head_splits=head_splits, head_kernel_size=head_kernel_size)
        self.head_splits = self._spec_config["head_splits"]
        self.head_kernel_size = self._spec_config["head_kernel_size"]
        self.depth_convs = [
            GridDepthwiseConv(kernel_size, dtype=self.dtype_policy, name=f"depth_conv_{index}")
            for index, kernel_size in enumerate(self.head_kernel_size, start=1)
        ]

    def build(self, query_shape, value_shape):
        checked_shapes("ConvRelativePositionalEncoding", self._spec_config, query_shape, value_shape, need=(1, 2, 3))
        _, self.num_heads, tokens, self.depth = (int(d) if d is not None else None for d in query_shape)
        self.side = grid_side("ConvRelativePositionalEncoding", tokens)
        for split, depth_conv in zip(self.head_splits, self.depth_convs):
            depth_conv.build((None, self.side, self.side, split * self.depth))

    def call(self, query, value):
        # [B, heads, 1 + side * side, d] -> [B, side, side, heads * d]: channel head * d + j.
        grid = ops.transpose(value[:, :, 1:], (0, 2, 1, 3))
        grid = ops.reshape(grid, (-1, self.side, self.side, self.num_heads * self.depth))
        convolved, start = [], 0
        for split, depth_conv in zip(self.head_splits, self.depth_convs):
            convolved.append(depth_conv(grid[..., start * self.depth : (start + split) * self.depth]))
            start += split
        conv = ops.reshape(ops.concatenate(convolved, axis=-1), (-1, self.side * self.side, self.num_heads, self.depth))
        encoded = query[:, :, 1:] * ops.transpose(conv, (0, 2, 1, 3))
        return ops.pad(encoded, ((0, 0), (0, 0), (1, 0), (0, 0)))

    def compute_output_shape(self, query_shape, value_shape):
        return tuple(query_shape)

    def get_config(self):
        return {**super().get_config(), **self._spec_config}


def layer_norm(inputs, name=None):
    """LayerNormalization over the last (channel) axis with epsilon 1e-6, the 2021 constant.

    The layer is named ``name + "ln"`` (weights ``<name>ln/gamma``, ``<name>ln/beta``); with
    ``name`` None or empty Keras picks a unique name, as Keras 2 did in 2021.
    """
    config = checked_config("layer_norm")
    checked_shapes("layer_norm", config, inputs.shape)
    return CenteredLayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name + "ln" if name else None)(inputs)


__all__ = ["ConvPositionalEncoding", "ConvRelativePositionalEncoding", "layer_norm"]
