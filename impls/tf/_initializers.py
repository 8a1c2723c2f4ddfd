"""Initializers whose values hold in float64."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="attnconf")
class ExactConstant(keras.initializers.Initializer):
    """Every entry ``value``, in the variable's dtype. ``keras.initializers.Constant`` casts a
    Python float through float32 first, so a float64 variable would start at 0.10000000149 for 0.1."""

    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return ops.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}
