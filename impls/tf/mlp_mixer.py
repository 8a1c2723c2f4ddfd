"""Keras 3 blocks from MLP-Mixer: mlp_block."""

from __future__ import annotations

import keras

from impls.tf import _activations
from impls.tf._checks import checked_config, checked_shapes


def mlp_block(inputs, hidden_dim, activation="gelu", name=None):
    """``Dense(hidden_dim) -> activation -> Dense(channels)`` on ``[batch, tokens, channels]``.

    Layers are named ``name + "Dense_0"`` and ``name + "Dense_1"``; with ``name`` None or empty
    Keras picks unique names, as in 2021.
    """
    config = checked_config("mlp_block", hidden_dim=hidden_dim, activation=activation)
    checked_shapes("mlp_block", config, inputs.shape)
    hidden = keras.layers.Dense(config["hidden_dim"], name=name and name + "Dense_0")(inputs)
    hidden = keras.layers.Activation(_activations.get(config["activation"]), name=name and name + config["activation"])(hidden)
    return keras.layers.Dense(inputs.shape[-1], name=name and name + "Dense_1")(hidden)


__all__ = ["mlp_block"]
