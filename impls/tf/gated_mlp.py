"""Keras 3 blocks from gMLP: spatial_gating_block."""

from __future__ import annotations

import keras

from impls.tf._checks import checked_config, checked_shapes
from impls.tf._layers import CenteredLayerNormalization

LAYER_NORM_EPSILON = 1e-5


def spatial_gating_block(inputs, name=None):
    """gMLP's spatial gating unit on ``[batch, tokens, channels]`` (channels even).

    The first channel half gates; the second goes through ``vv_ln`` (LayerNorm), is transposed,
    mixed over the tokens by ``vv_dense`` (N units, initialised as in 2021: kernel truncated
    normal of std 1e-6, bias ones), transposed back, and multiplies the gate. The output has
    half the channels. Layers are named ``name + "vv_ln"``, ``name + "permute_1"``,
    ``name + "vv_dense"``, ``name + "permute_2"``.
    """
    config = checked_config("spatial_gating_block")
    checked_shapes("spatial_gating_block", config, inputs.shape, need=(-1, -2))

    def named(suffix):
        return name and name + suffix

    gate, gated = keras.ops.split(inputs, 2, axis=-1)
    gated = CenteredLayerNormalization(epsilon=LAYER_NORM_EPSILON, name=named("vv_ln"))(gated)
    gated = keras.layers.Permute((2, 1), name=named("permute_1"))(gated)
    gated = keras.layers.Dense(
        inputs.shape[1],
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=1e-6),
        bias_initializer="ones",
        name=named("vv_dense"),
    )(gated)
    gated = keras.layers.Permute((2, 1), name=named("permute_2"))(gated)
    return keras.layers.Multiply()([gate, gated])


__all__ = ["spatial_gating_block"]
