"""Keras 3 layers from BoTNet: MHSAWithPositionEmbedding."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes, fix_input_sizes


def relative_index(size: int) -> np.ndarray:
    """``[i, j] -> size - 1 + j - i``: the column of a relative table for query i, key j."""
    positions = np.arange(size)
    return (size - 1 + positions[None, :] - positions[:, None]).astype("int32")


@keras.saving.register_keras_serializable(package="attnconf")
class MHSAWithPositionEmbedding(keras.layers.Layer):
    """Multi-head self-attention over a ``[batch, height, width, channels]`` map with
    relative (or absolute) 2D position logits, as in BoTNet."""

    def __init__(self, num_heads=4, key_dim=128, relative=True, out_shape=None, out_weight=True, out_bias=False, attn_dropout=0, **kwargs):
        super().__init__(**kwargs)
        config = checked_config(
            "MHSAWithPositionEmbedding",
            num_heads=num_heads,
            key_dim=key_dim,
            relative=relative,
            out_shape=out_shape,
            out_weight=out_weight,
            out_bias=out_bias,
            attn_dropout=attn_dropout,
        )
        self._spec_config = config
        for name, value in config.items():
            setattr(self, name, value)
        self.embed_dim = self.num_heads * self.key_dim
        self.out_channels = self.out_shape if self.out_weight and self.out_shape is not None else self.embed_dim

    def build(self, input_shape):
        checked_shapes("MHSAWithPositionEmbedding", self._spec_config, input_shape, need=(1, 2, 3))
        _, self.height, self.width, channels = (int(d) if d is not None else None for d in input_shape)
        fix_input_sizes(self, input_shape, axes=(1, 2, 3))  # the position tables and reshapes are for this map
        self.query = self.add_weight(name="query", shape=(channels, self.embed_dim))
        self.key = self.add_weight(name="key", shape=(channels, self.embed_dim))
        self.value = self.add_weight(name="value", shape=(channels, self.embed_dim))
        if self.out_weight:
            self.output_weight = self.add_weight(name="output_weight", shape=(self.embed_dim, self.out_channels))
        if self.out_bias:
            self.output_bias = self.add_weight(name="output_bias", shape=(self.out_channels,), initializer="zeros")
        widths = (2 * self.width - 1, 2 * self.height - 1) if self.relative else (self.width, self.height)
        table_init = keras.initializers.RandomNormal(stddev=self.key_dim**-0.5)
        self.r_width = self.add_weight(name="r_width", shape=(self.key_dim, widths[0]), initializer=table_init)
        self.r_height = self.add_weight(name="r_height", shape=(self.key_dim, widths[1]), initializer=table_init)
        self.attention_dropout = keras.layers.Dropout(self.attn_dropout, dtype=self.dtype_policy) if self.attn_dropout > 0 else None

    def _position_logits(self, query):
        """``query [B, heads, H, W, d]`` -> ``[B, heads, H, W, H, W]``."""
        if self.relative:
            rows = ops.take(self.r_height, relative_index(self.height), axis=1)  # [d, x, p]
            cols = ops.take(self.r_width, relative_index(self.width), axis=1)  # [d, y, q]
            along_height = ops.einsum("bnxyd,dxp->bnxyp", query, rows)
            along_width = ops.einsum("bnxyd,dyq->bnxyq", query, cols)
        else:
            along_height = ops.einsum("bnxyd,dp->bnxyp", query, self.r_height)
            along_width = ops.einsum("bnxyd,dq->bnxyq", query, self.r_width)
        return ops.expand_dims(along_height, -1) + ops.expand_dims(along_width, -2)

    def call(self, inputs, training=None):
        tokens = self.height * self.width

        def split_heads(projected):  # [B, H, W, E] -> [B, heads, H, W, key_dim]
            projected = ops.reshape(projected, (-1, self.height, self.width, self.num_heads, self.key_dim))
            return ops.transpose(projected, (0, 3, 1, 2, 4))

        # A Python float keeps the tensor's dtype; ops.cast(float) would round through float32.
        query = split_heads(ops.matmul(inputs, self.query)) * float(self.key_dim**-0.5)
        key = ops.reshape(split_heads(ops.matmul(inputs, self.key)), (-1, self.num_heads, tokens, self.key_dim))
        value = ops.reshape(split_heads(ops.matmul(inputs, self.value)), (-1, self.num_heads, tokens, self.key_dim))

        logits = ops.matmul(ops.reshape(query, (-1, self.num_heads, tokens, self.key_dim)), ops.transpose(key, (0, 1, 3, 2)))
        logits = logits + ops.reshape(self._position_logits(query), (-1, self.num_heads, tokens, tokens))
        # Over a single key the softmax is exactly 1 (and Keras warns about a size-1 softmax axis).
        attention = ops.softmax(logits, axis=-1) if tokens > 1 else ops.ones_like(logits)
        if self.attention_dropout is not None:
            attention = self.attention_dropout(attention, training=training)
        attended = ops.transpose(ops.matmul(attention, value), (0, 2, 1, 3))
        out = ops.reshape(attended, (-1, self.height, self.width, self.embed_dim))
        if self.out_weight:
            out = ops.matmul(out, self.output_weight)
        if self.out_bias:
            out = out + self.output_bias
        return out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.out_channels)

    def get_config(self):
        return {**super().get_config(), **self._spec_config}


__all__ = ["MHSAWithPositionEmbedding"]
