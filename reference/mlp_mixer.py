"""Blocks from MLP-Mixer (mlp_mixer): mlp_block, mixer_block.

Both are functional blocks working on token sequences ``[batch, tokens, channels]``. Their
canonical weight names are the Keras variable paths below the ``name`` prefix; ``mixer_block``
nests two ``mlp_block`` s under the scopes ``token_mixing/`` and ``channel_mixing/``, as the
2021 code names them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from reference import _ops, _sampling
from reference._conv import layer_norm
from reference._spec import REQUIRED, Example, Input, Integer, LayerSpec, OneOf, Param, Real, Rejection, Weight, kernel, no_extra_check, vector

MIXER_LAYER_NORM_EPSILON = 1e-5
"""The epsilon of both LayerNorms in ``mixer_block`` (the 2021 module's ``layer_norm`` helper)."""


def mlp_block(inputs: np.ndarray, *, weights, hidden_dim, activation="gelu") -> np.ndarray:
    """Two dense layers over the channel axis: ``Dense_1(act(Dense_0(x)))``.

    ``Dense_0`` maps the ``C`` input channels to ``hidden_dim``, ``Dense_1`` maps back to ``C``;
    both have biases. The default activation is the exact (erf) GELU.
    """
    hidden = inputs @ weights["Dense_0/kernel"]
    hidden += weights["Dense_0/bias"]
    out = _ops.activation(activation, hidden, overwrite=True) @ weights["Dense_1/kernel"]
    out += weights["Dense_1/bias"]
    return out


def mlp_weights(prefix: str, width: int, hidden_dim: int) -> list[Weight]:
    """The weights of an ``mlp_block`` on ``width`` features, named below ``prefix``."""
    return [
        kernel(f"{prefix}Dense_0/kernel", (width, hidden_dim)),
        vector(f"{prefix}Dense_0/bias", hidden_dim),
        kernel(f"{prefix}Dense_1/kernel", (hidden_dim, width)),
        vector(f"{prefix}Dense_1/bias", width),
    ]


def layer_norm_weights(prefix: str, channels: int) -> list[Weight]:
    """``<prefix>gamma`` and ``<prefix>beta``, which a freshly built LayerNorm holds as 1 and 0."""
    return [vector(f"{prefix}gamma", channels, initial=1.0), vector(f"{prefix}beta", channels, initial=0.0)]


def scope(weights: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The weights below ``prefix``, with the prefix removed."""
    return {name[len(prefix) :]: value for name, value in weights.items() if name.startswith(prefix)}


MLP_BLOCK = LayerSpec(
    name="mlp_block",
    family="mlp_mixer",
    kind="block",
    summary="Dense, activation, Dense back to the input width (the MLP of Mixer, ViT, VOLO).",
    params=(
        Param("hidden_dim", REQUIRED, Integer(minimum=1, sample_range=(1, 12)), "Width of the hidden layer."),
        Param("activation", "gelu", OneOf(tuple(_ops.ACTIVATIONS)), "Keras name of the activation between the two Dense layers."),
    ),
    inputs=(Input("inputs", "tokens"),),
    output_kind="tokens",
    forward=mlp_block,
    weights=lambda config, input_shape: mlp_weights("", input_shape[-1], config["hidden_dim"]),
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.tokens(draw),),
    examples=(
        Example(
            "documented",
            {"hidden_dim": 36},
            ((2, 784, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 784, 192),
            documented_weights={
                "Dense_0/kernel": (192, 36),
                "Dense_0/bias": (36,),
                "Dense_1/kernel": (36, 192),
                "Dense_1/bias": (192,),
            },
            fixture=False,
        ),
        # The weights do not depend on the number of tokens: one token keeps every weight shape.
        Example("readme_config", {"hidden_dim": 36}, ((1, 1, 192),), source="2021 code (07209e2)"),
        Example("small_gelu", {"hidden_dim": 7}, ((2, 5, 4),), source="spec"),
        Example("small_swish", {"hidden_dim": 3, "activation": "swish"}, ((1, 9, 6),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((1, 4, 3),), "config parameter 'hidden_dim' is required"),
        Rejection({"hidden_dim": 0}, ((1, 4, 3),), "hidden_dim 0 must be >= 1"),
        Rejection({"hidden_dim": 4, "activation": "mish"}, ((1, 4, 3),), "activation 'mish' must be one of"),
        Rejection({"hidden_dim": 4}, ((1, 2, 4, 3),), "inputs shape (1, 2, 4, 3) must have rank 3"),
    ),
)


# --------------------------------------------------------------------------------------------
# mixer_block


def mixer_block(inputs: np.ndarray, *, weights, tokens_mlp_dim, channels_mlp_dim, drop_rate=0, activation="gelu") -> np.ndarray:
    """One MLP-Mixer layer on ``x`` of shape ``[B, N, C]``: token mixing, then channel mixing,
    each a pre-norm residual branch.

    With ``LN_i(z) = (z - mean(z)) / sqrt(var(z) + 1e-5) * LayerNorm_i/gamma + LayerNorm_i/beta``
    over the channel axis (biased variance, epsilon 1e-5 in both):

    1. Token mixing: ``y = x + T(LN_0(x))``. ``T`` transposes its ``[B, N, C]`` input to
       ``[B, C, N]``, applies ``mlp_block`` with the ``token_mixing/`` weights and hidden width
       ``tokens_mlp_dim`` (so ``token_mixing/Dense_0`` mixes the N tokens, kernel
       ``(N, tokens_mlp_dim)``, and ``token_mixing/Dense_1`` maps back to N), and transposes
       back to ``[B, N, C]``. Each channel of each sample is mixed over tokens independently.
    2. Channel mixing: ``out = y + M(LN_1(y))``, ``M`` the ``mlp_block`` with the
       ``channel_mixing/`` weights and hidden width ``channels_mlp_dim`` over the C channels.

    Both MLPs use ``activation`` (exact erf GELU by default). ``drop_rate`` is stochastic depth
    on both branches while training (a Dropout whose noise shape ``(B, 1, 1)`` zeroes a whole
    branch of a sample with probability ``drop_rate`` and scales kept branches by
    ``1 / (1 - drop_rate)``); it is inactive at inference and has no effect here.
    """
    normalised = layer_norm(inputs, weights["LayerNorm_0/gamma"], weights["LayerNorm_0/beta"], MIXER_LAYER_NORM_EPSILON)
    token_mixed = mlp_block(normalised.swapaxes(1, 2), weights=scope(weights, "token_mixing/"), hidden_dim=tokens_mlp_dim, activation=activation)
    tokens_out = inputs + token_mixed.swapaxes(1, 2)
    normalised = layer_norm(tokens_out, weights["LayerNorm_1/gamma"], weights["LayerNorm_1/beta"], MIXER_LAYER_NORM_EPSILON)
    return tokens_out + mlp_block(normalised, weights=scope(weights, "channel_mixing/"), hidden_dim=channels_mlp_dim, activation=activation)


def _mixer_weights(config, input_shape):
    _, tokens, channels = input_shape
    return [
        *layer_norm_weights("LayerNorm_0/", channels),
        *mlp_weights("token_mixing/", tokens, config["tokens_mlp_dim"]),
        *layer_norm_weights("LayerNorm_1/", channels),
        *mlp_weights("channel_mixing/", channels, config["channels_mlp_dim"]),
    ]


MIXER_BLOCK = LayerSpec(
    name="mixer_block",
    family="mlp_mixer",
    kind="block",
    summary="MLP-Mixer layer: a token-mixing MLP across the tokens, then a channel-mixing MLP, each pre-LayerNorm and residual.",
    params=(
        Param("tokens_mlp_dim", REQUIRED, Integer(minimum=1, sample_range=(1, 8)), "Hidden width of the token-mixing MLP (mixes the N tokens)."),
        Param("channels_mlp_dim", REQUIRED, Integer(minimum=1, sample_range=(1, 8)), "Hidden width of the channel-mixing MLP (mixes the C channels)."),
        Param(
            "drop_rate",
            0,
            Real(0.0, 1.0, sample_range=(0.0, 0.9)),
            "Stochastic-depth rate of both residual branches while training; inactive at inference.",
        ),
        Param("activation", "gelu", OneOf(tuple(_ops.ACTIVATIONS)), "Keras name of the activation inside both MLPs."),
    ),
    inputs=(Input("inputs", "tokens"),),
    output_kind="tokens",
    forward=mixer_block,
    weights=_mixer_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.tokens(draw),),
    examples=(
        Example(
            "documented",
            {"tokens_mlp_dim": 196, "channels_mlp_dim": 36},
            ((2, 784, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 784, 192),
            documented_weights={
                "LayerNorm_0/gamma": (192,),
                "LayerNorm_0/beta": (192,),
                "token_mixing/Dense_0/kernel": (784, 196),
                "token_mixing/Dense_0/bias": (196,),
                "token_mixing/Dense_1/kernel": (196, 784),
                "token_mixing/Dense_1/bias": (784,),
                "LayerNorm_1/gamma": (192,),
                "LayerNorm_1/beta": (192,),
                "channel_mixing/Dense_0/kernel": (192, 36),
                "channel_mixing/Dense_0/bias": (36,),
                "channel_mixing/Dense_1/kernel": (36, 192),
                "channel_mixing/Dense_1/bias": (192,),
            },
            fixture=False,
        ),
        # The token-mixing weights depend on N, so batch 1 is the only saving; its file would
        # still be about 2.2 MB, over the per-fixture budget.
        Example("readme_config", {"tokens_mlp_dim": 196, "channels_mlp_dim": 36}, ((1, 784, 192),), source="2021 code (07209e2)", fixture=False),
        Example("small_gelu", {"tokens_mlp_dim": 3, "channels_mlp_dim": 6}, ((2, 5, 4),), source="spec"),
        Example("small_relu_drop_rate", {"tokens_mlp_dim": 6, "channels_mlp_dim": 2, "drop_rate": 0.1, "activation": "relu"}, ((1, 3, 7),), source="spec"),
        Example("small_square_swish", {"tokens_mlp_dim": 5, "channels_mlp_dim": 5, "activation": "swish"}, ((3, 4, 4),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((1, 4, 3),), "config parameter 'tokens_mlp_dim' is required"),
        Rejection({"tokens_mlp_dim": 4}, ((1, 4, 3),), "config parameter 'channels_mlp_dim' is required"),
        Rejection({"tokens_mlp_dim": 0, "channels_mlp_dim": 4}, ((1, 4, 3),), "tokens_mlp_dim 0 must be >= 1"),
        Rejection({"tokens_mlp_dim": 4, "channels_mlp_dim": 2.5}, ((1, 4, 3),), "channels_mlp_dim 2.5 must be an integer"),
        Rejection({"tokens_mlp_dim": 4, "channels_mlp_dim": 4, "drop_rate": 1.0}, ((1, 4, 3),), "drop_rate 1.0 must be a finite real in [0.0, 1.0)"),
        Rejection({"tokens_mlp_dim": 4, "channels_mlp_dim": 4, "drop_rate": -0.1}, ((1, 4, 3),), "drop_rate -0.1 must be a finite real in [0.0, 1.0)"),
        Rejection({"tokens_mlp_dim": 4, "channels_mlp_dim": 4, "activation": "mish"}, ((1, 4, 3),), "activation 'mish' must be one of"),
        Rejection({"tokens_mlp_dim": 4, "channels_mlp_dim": 4}, ((1, 2, 4, 3),), "inputs shape (1, 2, 4, 3) must have rank 3"),
    ),
    notes=(
        "The LayerNorm epsilon is 1e-5 (the 2021 module's own `layer_norm`), not the 1e-6 of the "
        "`layer_norm` block of coat: on inputs of variance 1e-5 the two normalise to values about 26 % apart.",
        "`drop_rate` in the 2021 code is a `Dropout(drop_rate, noise_shape=(None, 1, 1))` on each "
        "residual branch, added only when `drop_rate > 0`: per-sample stochastic depth while "
        "training, inactive at inference. The spec takes `drop_rate` in [0, 1); the 2021 code "
        "silently ignored negative rates and could not run a rate of 1.",
        "The weight names nest: `token_mixing/` and `channel_mixing/` are the 2021 name prefixes "
        "`name + \"token_mixing/\"` and `name + \"channel_mixing/\"` given to the inner `mlp_block`s.",
    ),
)

SPECS = (MLP_BLOCK, MIXER_BLOCK)
