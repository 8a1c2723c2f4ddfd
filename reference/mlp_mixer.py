"""Blocks from MLP-Mixer (mlp_mixer): mlp_block."""

from __future__ import annotations

import numpy as np

from reference import _sampling
from reference import _ops
from reference._spec import REQUIRED, Example, Input, Integer, LayerSpec, OneOf, Param, Rejection, kernel, no_extra_check, vector


def mlp_block(inputs: np.ndarray, *, weights, hidden_dim, activation="gelu") -> np.ndarray:
    """Two dense layers over the channel axis: ``Dense_1(act(Dense_0(x)))``.

    ``Dense_0`` maps the ``C`` input channels to ``hidden_dim``, ``Dense_1`` maps back to ``C``;
    both have biases. The default activation is the exact (erf) GELU.
    """
    hidden = inputs @ weights["Dense_0/kernel"] + weights["Dense_0/bias"]
    hidden = _ops.activation(activation, hidden)
    return hidden @ weights["Dense_1/kernel"] + weights["Dense_1/bias"]


def _weights(config, input_shape):
    c, hidden = input_shape[-1], config["hidden_dim"]
    return [
        kernel("Dense_0/kernel", (c, hidden)),
        vector("Dense_0/bias", hidden),
        kernel("Dense_1/kernel", (hidden, c)),
        vector("Dense_1/bias", c),
    ]


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
    weights=_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.tokens(draw),),
    examples=(
        Example(
            "brief",
            {"hidden_dim": 36},
            ((2, 784, 192),),
            source="SPEC_BRIEF table",
            documented_output_shape=(2, 784, 192),
            documented_weights={
                "Dense_0/kernel": (192, 36),
                "Dense_0/bias": (36,),
                "Dense_1/kernel": (36, 192),
                "Dense_1/bias": (192,),
            },
            fixture=False,
        ),
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

SPECS = (MLP_BLOCK,)
