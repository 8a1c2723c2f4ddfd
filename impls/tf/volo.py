"""Keras 3 layers from VOLO: BiasLayer."""

from __future__ import annotations

import keras

from impls.tf._checks import checked_shapes


@keras.saving.register_keras_serializable(package="attnconf")
class BiasLayer(keras.layers.Layer):
    """``inputs + bias`` over the last axis."""

    def build(self, input_shape):
        checked_shapes("BiasLayer", {}, input_shape)
        self.bb = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer="zeros")

    def call(self, inputs):
        return inputs + self.bb

    def compute_output_shape(self, input_shape):
        return input_shape


__all__ = ["BiasLayer"]
