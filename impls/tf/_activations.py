"""Activations by their Keras names, with an exact GELU that holds in float64.

``keras.activations.gelu`` (``tf.nn.gelu``) multiplies by 1/sqrt(2) rounded to float32, which
puts float64 outputs off by up to ~5e-9; ours keeps the constant in the input's dtype.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="attnconf")
def exact_gelu(x):
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def get(name: str):
    """The Keras activation for a canonical activation name."""
    return exact_gelu if name == "gelu" else keras.activations.get(name)
