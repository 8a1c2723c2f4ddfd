"""Layers from VOLO (volo): BiasLayer."""

from __future__ import annotations

import numpy as np

from reference import _sampling
from reference._spec import Example, Input, LayerSpec, Rejection, no_extra_check, vector


def bias_layer(inputs: np.ndarray, *, weights) -> np.ndarray:
    """``inputs + bias`` per channel (the last axis)."""
    return inputs + weights["bias"]


BIAS_LAYER = LayerSpec(
    name="BiasLayer",
    family="volo",
    kind="layer",
    summary="A learned per-channel bias.",
    params=(),
    inputs=(Input("inputs", "channels_last"),),
    output_kind="channels_last",
    forward=bias_layer,
    weights=lambda config, input_shape: [vector("bias", input_shape[-1])],
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.channels_last(draw),),
    examples=(
        Example(
            "brief",
            {},
            ((2, 14, 14, 192),),
            source="SPEC_BRIEF table",
            documented_output_shape=(2, 14, 14, 192),
            documented_weights={"bias": (192,)},
            fixture=False,
        ),
        Example("small_feature_map", {}, ((2, 4, 3, 5),), source="spec"),
        Example("small_tokens", {}, ((3, 5, 2),), source="spec"),
    ),
    rejections=(
        Rejection({"use_bias": True}, ((1, 3),), "unknown config parameter 'use_bias'"),
        Rejection({}, ((4,),), "inputs shape (4,) must have rank 2, 3 or 4"),
    ),
)

SPECS = (BIAS_LAYER,)
