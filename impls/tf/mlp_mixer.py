"""Keras 3 blocks from MLP-Mixer: mlp_block, mixer_block.

The 2021 ``mixer_block`` names its inner MLPs ``name + "token_mixing/"`` and
``name + "channel_mixing/"``, giving Keras 2 variables such as ``token_mixing/Dense_0/kernel``.
Keras 3 refuses ``/`` in layer names, and a variable's path is the chain of layer names that
built it. So ``mlp_block`` reads a ``name`` ending in ``/`` as a scope: it builds one
:class:`MlpBlock` layer named after the scope, holding ``Dense_0`` and ``Dense_1``, and the
variable paths come out as in 2021 (``<scope>/Dense_0/kernel``).
"""

from __future__ import annotations

import keras

from impls.tf import _activations
from impls.tf._checks import checked_config, checked_shapes
from impls.tf._layers import CenteredLayerNormalization

LAYER_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="attnconf")
class MlpBlock(keras.layers.Layer):
    """``Dense_0 -> activation -> Dense_1`` as one layer, so that the Dense variables live
    under this layer's name: ``<name>/Dense_0/kernel``."""

    def __init__(self, hidden_dim, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        config = checked_config("mlp_block", hidden_dim=hidden_dim, activation=activation)
        self.hidden_dim, self.activation = config["hidden_dim"], config["activation"]
        self.dense_0 = keras.layers.Dense(self.hidden_dim, name="Dense_0", dtype=self.dtype_policy)
        self.activation_layer = keras.layers.Activation(_activations.get(self.activation), name=self.activation, dtype=self.dtype_policy)
        self.dense_1 = None  # its width is the input's, known at build

    def build(self, input_shape):
        checked_shapes("mlp_block", self._spec_config(), input_shape)
        self.dense_1 = keras.layers.Dense(int(input_shape[-1]), name="Dense_1", dtype=self.dtype_policy)
        self.dense_0.build(input_shape)
        self.dense_1.build((*input_shape[:-1], self.hidden_dim))

    def call(self, inputs):
        return self.dense_1(self.activation_layer(self.dense_0(inputs)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def _spec_config(self):
        return {"hidden_dim": self.hidden_dim, "activation": self.activation}

    def get_config(self):
        return {**super().get_config(), **self._spec_config()}


def mlp_block(inputs, hidden_dim, activation="gelu", name=None):
    """``Dense(hidden_dim) -> activation -> Dense(channels)`` on ``[batch, tokens, channels]``.

    Layers are named ``name + "Dense_0"`` and ``name + "Dense_1"``; with ``name`` None or empty
    Keras picks unique names, as in 2021. A ``name`` ending in ``/`` (as ``mixer_block`` passes)
    is a scope: one :class:`MlpBlock` layer named ``name[:-1]`` whose variables are
    ``name + "Dense_0/kernel"`` and so on, the 2021 paths.
    """
    config = checked_config("mlp_block", hidden_dim=hidden_dim, activation=activation)
    checked_shapes("mlp_block", config, inputs.shape)
    if name and name.endswith("/"):
        return MlpBlock(**config, name=name[:-1])(inputs)
    hidden = keras.layers.Dense(config["hidden_dim"], name=name and name + "Dense_0")(inputs)
    hidden = keras.layers.Activation(_activations.get(config["activation"]), name=name and name + config["activation"])(hidden)
    return keras.layers.Dense(inputs.shape[-1], name=name and name + "Dense_1")(hidden)


def mixer_block(inputs, tokens_mlp_dim, channels_mlp_dim, drop_rate=0, activation="gelu", name=None):
    """One MLP-Mixer layer on ``[batch, tokens, channels]``: a token-mixing MLP (across the
    tokens, on the transposed LayerNorm'd input) and a channel-mixing MLP, each added back.

    Layers are named as in 2021 below ``name``: ``LayerNorm_0``, ``token_mixing/``,
    ``LayerNorm_1``, ``channel_mixing/`` (and ``permute_0``, ``permute_1``, ``add_0``,
    ``add_1``, ``token_drop``, ``channel_drop``). ``drop_rate`` is per-sample stochastic depth of
    both branches, active only in training.
    """
    config = checked_config(
        "mixer_block", tokens_mlp_dim=tokens_mlp_dim, channels_mlp_dim=channels_mlp_dim, drop_rate=drop_rate, activation=activation
    )
    checked_shapes("mixer_block", config, inputs.shape, need=(-1, -2))

    def named(suffix):
        return name and name + suffix

    def drop_branch(branch, suffix):
        if config["drop_rate"] == 0:
            return branch
        return keras.layers.Dropout(config["drop_rate"], noise_shape=(None, 1, 1), name=named(suffix))(branch)

    normalised = CenteredLayerNormalization(epsilon=LAYER_NORM_EPSILON, name=named("LayerNorm_0"))(inputs)
    transposed = keras.layers.Permute((2, 1), name=named("permute_0"))(normalised)
    mixed = mlp_block(transposed, config["tokens_mlp_dim"], config["activation"], name=named("token_mixing/"))
    mixed = keras.layers.Permute((2, 1), name=named("permute_1"))(mixed)
    tokens_out = keras.layers.Add(name=named("add_0"))([drop_branch(mixed, "token_drop"), inputs])

    normalised = CenteredLayerNormalization(epsilon=LAYER_NORM_EPSILON, name=named("LayerNorm_1"))(tokens_out)
    mixed = mlp_block(normalised, config["channels_mlp_dim"], config["activation"], name=named("channel_mixing/"))
    return keras.layers.Add(name=named("add_1"))([drop_branch(mixed, "channel_drop"), tokens_out])


__all__ = ["mlp_block", "mixer_block"]
