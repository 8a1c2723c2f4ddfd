"""Keras 3 layers from HaloNet: HaloAttention."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes


def window_relative_index(block_size: int, window: int) -> np.ndarray:
    """``[i, j] -> window - 1 + j - i``: the column of a relative table for the query at i
    inside its block and the key at j inside its window."""
    return (window - 1 + np.arange(window)[None, :] - np.arange(block_size)[:, None]).astype("int32")


def window_pixels(blocks: int, block_size: int, window: int) -> np.ndarray:
    """``[r, u] -> r * block_size + u``: the padded row (or column) of cell u of block r's window."""
    return (block_size * np.arange(blocks)[:, None] + np.arange(window)[None, :]).astype("int32")


@keras.saving.register_keras_serializable(package="attnconf")
class HaloAttention(keras.layers.Layer):
    """Multi-head self-attention of each ``block_size x block_size`` block of queries over a
    ``block_size + 2 * halo_size`` window of keys around it, with relative 2D position logits,
    on a ``[batch, height, width, channels]`` map (HaloNet). Its weights depend only on the
    channels, the block and the halo, so a built layer runs on any map whose sides are
    multiples of ``block_size``."""

    def __init__(
        self,
        num_heads=4,
        key_dim=128,
        block_size=2,
        halo_size=1,
        out_shape=None,
        out_weight=True,
        out_bias=False,
        attn_dropout=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        config = checked_config(
            "HaloAttention",
            num_heads=num_heads,
            key_dim=key_dim,
            block_size=block_size,
            halo_size=halo_size,
            out_shape=out_shape,
            out_weight=out_weight,
            out_bias=out_bias,
            attn_dropout=attn_dropout,
        )
        self._spec_config = config
        for name, value in config.items():
            setattr(self, name, value)
        self.embed_dim = self.num_heads * self.key_dim
        self.window = self.block_size + 2 * self.halo_size
        self.out_channels = self.out_shape if self.out_weight and self.out_shape is not None else self.embed_dim

    def build(self, input_shape):
        checked_shapes("HaloAttention", self._spec_config, input_shape, need=(1, 2, 3))
        channels = int(input_shape[-1])
        self.query = self.add_weight(name="query", shape=(channels, self.embed_dim))
        self.key_value = self.add_weight(name="key_value", shape=(channels, 2 * self.embed_dim))
        if self.out_weight:
            self.output_weight = self.add_weight(name="output_weight", shape=(self.embed_dim, self.out_channels))
        if self.out_bias:
            self.output_bias = self.add_weight(name="output_bias", shape=(self.out_channels,), initializer="zeros")
        table_init = keras.initializers.RandomNormal(stddev=self.key_dim**-0.5)
        self.r_width = self.add_weight(name="r_width", shape=(self.key_dim, 2 * self.window - 1), initializer=table_init)
        self.r_height = self.add_weight(name="r_height", shape=(self.key_dim, 2 * self.window - 1), initializer=table_init)
        self.attention_dropout = keras.layers.Dropout(self.attn_dropout, dtype=self.dtype_policy) if self.attn_dropout > 0 else None

    def _windows(self, key_value, rows, cols):
        """``[B, H, W, 2E]`` -> ``[B, heads, rows, cols, win*win, 2*key_dim]``: each block's
        window of the zero-padded projection, key then value channels per head."""
        halo, block, window = self.halo_size, self.block_size, self.window
        padded = ops.pad(key_value, ((0, 0), (halo, halo), (halo, halo), (0, 0)))
        windows = ops.take(padded, window_pixels(rows, block, window), axis=1)  # [B, rows, win, W + 2 halo, 2E]
        windows = ops.take(windows, window_pixels(cols, block, window), axis=3)  # [B, rows, win, cols, win, 2E]
        windows = ops.reshape(windows, (-1, rows, window, cols, window, self.num_heads, 2 * self.key_dim))
        windows = ops.transpose(windows, (0, 5, 1, 3, 2, 4, 6))
        return ops.reshape(windows, (-1, self.num_heads, rows, cols, window * window, 2 * self.key_dim))

    def _position_logits(self, query):
        """Blocked query ``[B, heads, rows, cols, b, b, d]`` -> ``[B, heads, rows, cols, b, b, win, win]``."""
        index = window_relative_index(self.block_size, self.window)
        along_height = ops.einsum("bnrcxyd,dxu->bnrcxyu", query, ops.take(self.r_height, index, axis=1))
        along_width = ops.einsum("bnrcxyd,dyv->bnrcxyv", query, ops.take(self.r_width, index, axis=1))
        return ops.expand_dims(along_height, -1) + ops.expand_dims(along_width, -2)

    def call(self, inputs, training=None):
        checked_shapes("HaloAttention", self._spec_config, inputs.shape, need=(1, 2, 3))
        _, height, width, channels = inputs.shape
        built_channels = self.query.shape[0]
        if channels != built_channels:
            raise ValueError(f"HaloAttention: inputs shape {tuple(inputs.shape)} must have {built_channels} channels, as when the layer was built")
        block, window, heads, key_dim = self.block_size, self.window, self.num_heads, self.key_dim
        rows, cols = height // block, width // block

        # A Python float keeps the tensor's dtype; ops.cast(float) would round through float32.
        query = ops.matmul(inputs, self.query) * float(key_dim**-0.5)
        query = ops.reshape(query, (-1, rows, block, cols, block, heads, key_dim))
        query = ops.transpose(query, (0, 5, 1, 3, 2, 4, 6))  # [B, heads, rows, cols, b, b, key_dim]
        key, value = ops.split(self._windows(ops.matmul(inputs, self.key_value), rows, cols), 2, axis=-1)

        flat_query = ops.reshape(query, (-1, heads, rows, cols, block * block, key_dim))
        logits = ops.matmul(flat_query, ops.swapaxes(key, -1, -2))  # [B, heads, rows, cols, b*b, win*win]
        logits = logits + ops.reshape(self._position_logits(query), (-1, heads, rows, cols, block * block, window * window))
        # Over a single key the softmax is exactly 1 (and Keras warns about a size-1 softmax axis).
        attention = ops.softmax(logits, axis=-1) if window > 1 else ops.ones_like(logits)
        if self.attention_dropout is not None:
            attention = self.attention_dropout(attention, training=training)

        attended = ops.reshape(ops.matmul(attention, value), (-1, heads, rows, cols, block, block, key_dim))
        out = ops.reshape(ops.transpose(attended, (0, 2, 4, 3, 5, 1, 6)), (-1, height, width, self.embed_dim))
        if self.out_weight:
            out = ops.matmul(out, self.output_weight)
        if self.out_bias:
            out = out + self.output_bias
        return out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.out_channels)

    def get_config(self):
        return {**super().get_config(), **self._spec_config}


__all__ = ["HaloAttention"]
