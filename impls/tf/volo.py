"""Keras 3 layers and blocks from VOLO: outlook_attention, outlook_attention_simple, BiasLayer,
PositionalEmbedding, ClassToken."""

from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

from impls.tf._checks import checked_config, checked_shapes, fix_input_sizes


def _prefixed(name, sublayer):
    """The 2021 naming, ``name + sublayer``; with ``name`` None or empty Keras picks unique names."""
    return name and name + sublayer


def window_placement(size: int, windows: int, kernel_size: int, strides: int, padding: int) -> np.ndarray:
    """``[size, windows, kernel_size]`` one-hot: entry ``[y, m, i]`` is 1 where offset ``i`` of
    window ``m`` lies on pixel ``y``, that is ``m * strides + i - padding == y``. Offsets on the
    padding have no pixel, so they read zeros (unfold) and are dropped (fold)."""
    pixel = strides * np.arange(windows)[:, None] + np.arange(kernel_size)[None, :] - padding
    return (pixel[None, :, :] == np.arange(size)[:, None, None]).astype("float64")


@keras.saving.register_keras_serializable(package="attnconf")
class CeilAveragePooling2D(keras.layers.Layer):
    """``pool_size x pool_size`` average at stride ``pool_size``, ceil mode: the last row and
    column of windows may be cut by the border and average only the pixels inside the map
    (PyTorch's ``AvgPool2d(ceil_mode=True)``)."""

    def __init__(self, pool_size, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def build(self, input_shape):
        _, height, width, _ = input_shape
        pool = self.pool_size
        rows, cols = -(-height // pool), -(-width // pool)
        inside = np.zeros((rows * pool, cols * pool))
        inside[:height, :width] = 1.0
        self.pixels_per_window = inside.reshape(rows, pool, cols, pool).sum(axis=(1, 3))[..., None]
        self.border = ((0, 0), (0, rows * pool - height), (0, cols * pool - width), (0, 0))

    def call(self, inputs):
        rows, cols = self.pixels_per_window.shape[:2]
        padded = ops.pad(inputs, self.border)
        window_sums = ops.sum(ops.reshape(padded, (-1, rows, self.pool_size, cols, self.pool_size, inputs.shape[-1])), axis=(2, 4))
        return window_sums / ops.convert_to_tensor(self.pixels_per_window, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, -(-height // self.pool_size), -(-width // self.pool_size), channels)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="attnconf")
class UnfoldAttendFold(keras.layers.Layer):
    """The weight-free middle of outlook attention: ``[value [B, H, W, E], logits [B, P, Q,
    num_head * k^4]] -> [B, H, W, E]``.

    The logits are divided by ``sqrt(E // num_head)`` and soft-maxed over their last ``k^2``
    block (channel ``h * k^4 + i * k^2 + j``: head ``h``, output offset ``i``, input offset
    ``j``). The value map is unfolded into ``k x k`` windows at ``strides`` after ``padding``
    zeros on every side, each window mixed per head (head ``h`` owns channels ``h*d ..
    h*d + d - 1``), and the windows are folded back, overlaps summed.

    Unfold and fold are contractions with one-hot placement matrices (:func:`window_placement`):
    exact, since every product is by 0 or 1, and free of batch-dependent scatter ops.
    """

    def __init__(self, num_head, kernel_size, strides, padding, attn_dropout=0, **kwargs):
        super().__init__(**kwargs)
        self.num_head, self.kernel_size, self.strides, self.padding = int(num_head), int(kernel_size), int(strides), int(padding)
        self.attn_dropout = attn_dropout
        self.attention_dropout = keras.layers.Dropout(attn_dropout, dtype=self.dtype_policy) if attn_dropout > 0 else None

    def build(self, input_shape):
        value_shape, logits_shape = input_shape
        (_, height, width, self.embed_dim), (rows, cols) = value_shape, logits_shape[1:3]
        placement = (self.kernel_size, self.strides, self.padding)
        self.row_placement = window_placement(height, rows, *placement)
        self.col_placement = window_placement(width, cols, *placement)

    def call(self, inputs, training=None):
        value, logits = inputs
        rows, cols = self.row_placement.shape[1], self.col_placement.shape[1]
        k2, heads = self.kernel_size**2, self.num_head
        depth = self.embed_dim // heads
        row_placement = ops.convert_to_tensor(self.row_placement, dtype=self.compute_dtype)
        col_placement = ops.convert_to_tensor(self.col_placement, dtype=self.compute_dtype)

        # A Python float keeps the tensor's dtype; ops.cast(float) would round through float32.
        logits = ops.reshape(logits / float(math.sqrt(depth)), (-1, rows, cols, heads, k2, k2))
        # Over a single offset the softmax is exactly 1 (and Keras warns about a size-1 axis).
        attention = ops.softmax(logits, axis=-1) if k2 > 1 else ops.ones_like(logits)
        if self.attention_dropout is not None:
            attention = self.attention_dropout(attention, training=training)

        windows = ops.einsum("ymi,byxc->bmixc", row_placement, value)
        windows = ops.einsum("xqj,bmixc->bmqijc", col_placement, windows)  # [B, P, Q, k, k, E]
        windows = ops.transpose(ops.reshape(windows, (-1, rows, cols, k2, heads, depth)), (0, 1, 2, 4, 3, 5))
        mixed = ops.matmul(attention, windows)  # [B, P, Q, heads, k^2 (output offsets), d]
        mixed = ops.reshape(ops.transpose(mixed, (0, 1, 2, 4, 3, 5)), (-1, rows, cols, self.kernel_size, self.kernel_size, self.embed_dim))
        folded = ops.einsum("ymi,bmqijc->byqjc", row_placement, mixed)
        return ops.einsum("xqj,byqjc->byxc", col_placement, folded)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {
            **super().get_config(),
            "num_head": self.num_head,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "attn_dropout": self.attn_dropout,
        }


def outlook_attention(inputs, embed_dim, num_head, kernel_size=3, padding=1, strides=2, attn_dropout=0, output_dropout=0, name=None):
    """VOLO's outlook attention on a ``[batch, height, width, channels]`` map; output
    ``[batch, height, width, embed_dim]``.

    ``padding`` is the 2021 flag (1 pads ``kernel_size // 2`` on every side). The Dense layers
    are named ``name + "v"``, ``name + "attn"`` and ``name + "out"``, as in 2021. Sizes where
    the ``ceil(size / strides)`` pooled positions and the unfolded windows differ in number are
    rejected with a ValueError.
    """
    config = checked_config(
        "outlook_attention",
        embed_dim=embed_dim,
        num_head=num_head,
        kernel_size=kernel_size,
        padding=padding,
        strides=strides,
        attn_dropout=attn_dropout,
        output_dropout=output_dropout,
    )
    checked_shapes("outlook_attention", config, inputs.shape, need=(1, 2, 3))
    embed_dim, num_head, kernel_size = config["embed_dim"], config["num_head"], config["kernel_size"]

    value = keras.layers.Dense(embed_dim, use_bias=False, name=_prefixed(name, "v"))(inputs)
    pooled = CeilAveragePooling2D(config["strides"], name=_prefixed(name, "pool"))(inputs)
    logits = keras.layers.Dense(kernel_size**4 * num_head, name=_prefixed(name, "attn"))(pooled)
    border = kernel_size // 2 if config["padding"] == 1 else 0
    mixed = UnfoldAttendFold(
        num_head, kernel_size, config["strides"], border, config["attn_dropout"], name=_prefixed(name, "unfold_matmul_fold")
    )([value, logits])
    output = keras.layers.Dense(embed_dim, name=_prefixed(name, "out"))(mixed)
    if config["output_dropout"] > 0:
        output = keras.layers.Dropout(config["output_dropout"], name=_prefixed(name, "out_drop"))(output)
    return output


def outlook_attention_simple(inputs, embed_dim, num_head=6, kernel_size=3, attn_dropout=0, name=None):
    """Outlook attention on non-overlapping ``kernel_size`` windows of a ``[batch, height,
    width, channels]`` map zero-padded at the bottom and right to whole windows (each axis by
    its own amount); output ``[batch, height, width, embed_dim]``. The average pool counts the
    padding and padded offsets take part in the softmax, as in 2021."""
    config = checked_config("outlook_attention_simple", embed_dim=embed_dim, num_head=num_head, kernel_size=kernel_size, attn_dropout=attn_dropout)
    checked_shapes("outlook_attention_simple", config, inputs.shape, need=(1, 2, 3))
    embed_dim, num_head, kernel_size = config["embed_dim"], config["num_head"], config["kernel_size"]
    _, height, width, _ = inputs.shape
    extra = ((0, -height % kernel_size), (0, -width % kernel_size))
    padded = keras.layers.ZeroPadding2D(extra, name=_prefixed(name, "pad"))(inputs) if any(e for _, e in extra) else inputs

    value = keras.layers.Dense(embed_dim, use_bias=False, name=_prefixed(name, "v"))(padded)
    pooled = keras.layers.AveragePooling2D(kernel_size, strides=kernel_size, name=_prefixed(name, "pool"))(padded)
    logits = keras.layers.Dense(kernel_size**4 * num_head, name=_prefixed(name, "attn"))(pooled)
    mixed = UnfoldAttendFold(num_head, kernel_size, kernel_size, 0, config["attn_dropout"], name=_prefixed(name, "unfold_matmul_fold"))([value, logits])
    if padded is not inputs:
        mixed = keras.layers.Cropping2D(extra, name=_prefixed(name, "crop"))(mixed)
    return keras.layers.Dense(embed_dim, name=_prefixed(name, "out"))(mixed)


@keras.saving.register_keras_serializable(package="attnconf")
class BiasLayer(keras.layers.Layer):
    """``inputs + bias`` over the last axis."""

    def build(self, input_shape):
        checked_shapes("BiasLayer", {}, input_shape)
        fix_input_sizes(self, input_shape, axes=(-1,), ranks=(2, 3, 4))
        self.bb = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer="zeros")

    def call(self, inputs):
        return inputs + self.bb

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="attnconf")
class PositionalEmbedding(keras.layers.Layer):
    """``inputs + positional_embedding`` on a ``[batch, height, width, channels]`` map: one
    learned ``(1, height, width, channels)`` vector per pixel."""

    def build(self, input_shape):
        checked_shapes("PositionalEmbedding", {}, input_shape, need=(1, 2, 3))
        fix_input_sizes(self, input_shape, axes=(1, 2, 3))
        self.positional_embedding = self.add_weight(
            name="positional_embedding",
            shape=(1, *(int(d) for d in input_shape[1:])),
            initializer=keras.initializers.TruncatedNormal(stddev=0.2),
        )

    def call(self, inputs):
        return inputs + self.positional_embedding

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="attnconf")
class ClassToken(keras.layers.Layer):
    """Prepends the learned ``tokens (1, 1, channels)`` to ``[batch, tokens, channels]``:
    output ``[batch, tokens + 1, channels]`` with the class token first."""

    def build(self, input_shape):
        checked_shapes("ClassToken", {}, input_shape)
        fix_input_sizes(self, input_shape, axes=(-1,))
        self.tokens = self.add_weight(name="tokens", shape=(1, 1, int(input_shape[-1])), initializer=keras.initializers.TruncatedNormal(stddev=0.2))

    def call(self, inputs):
        tokens = ops.broadcast_to(self.tokens, (ops.shape(inputs)[0], 1, self.tokens.shape[-1]))
        return ops.concatenate([tokens, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        batch, count, channels = input_shape
        return (batch, None if count is None else count + 1, channels)


__all__ = ["outlook_attention", "outlook_attention_simple", "BiasLayer", "PositionalEmbedding", "ClassToken"]
