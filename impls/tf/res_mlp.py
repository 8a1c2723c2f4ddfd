"""Keras 3 layers from ResMLP: ChannelAffine."""

from __future__ import annotations

import keras

from impls.tf._checks import checked_config, checked_shapes, fix_input_sizes
from impls.tf._initializers import ExactConstant


@keras.saving.register_keras_serializable(package="attnconf")
class ChannelAffine(keras.layers.Layer):
    """``inputs * weight + bias`` over the last axis; ``bias`` only with ``use_bias``."""

    def __init__(self, use_bias=True, weight_init_value=1, **kwargs):
        super().__init__(**kwargs)
        config = checked_config("ChannelAffine", use_bias=use_bias, weight_init_value=weight_init_value)
        self.use_bias, self.weight_init_value = config["use_bias"], config["weight_init_value"]

    def build(self, input_shape):
        checked_shapes("ChannelAffine", self._spec_config(), input_shape)
        channels = int(input_shape[-1])
        fix_input_sizes(self, input_shape, axes=(-1,), ranks=(2, 3, 4))
        self.ww = self.add_weight(name="weight", shape=(channels,), initializer=ExactConstant(self.weight_init_value))
        if self.use_bias:
            self.bb = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        scaled = inputs * self.ww
        return scaled + self.bb if self.use_bias else scaled

    def compute_output_shape(self, input_shape):
        return input_shape

    def _spec_config(self):
        return {"use_bias": self.use_bias, "weight_init_value": self.weight_init_value}

    def get_config(self):
        return {**super().get_config(), **self._spec_config()}


__all__ = ["ChannelAffine"]
