"""Layers from ResMLP (res_mlp): ChannelAffine."""

from __future__ import annotations

import numpy as np

from reference import _sampling
from reference._spec import Boolean, Example, Input, LayerSpec, Param, Real, Rejection, no_extra_check, vector


def channel_affine(inputs: np.ndarray, *, weights, use_bias=True, weight_init_value=1) -> np.ndarray:
    """``inputs * weight + bias`` per channel (the last axis); ``inputs * weight`` when
    ``use_bias`` is False.

    ``weight_init_value`` only sets the initial ``weight`` (all entries); it has no effect on
    the output once weights are given.
    """
    out = inputs * weights["weight"]
    if use_bias:
        out += weights["bias"]
    return out


def _weights(config, input_shape):
    c = input_shape[-1]
    weight = vector("weight", c, initial=config["weight_init_value"])
    return [weight] + ([vector("bias", c, initial=0.0)] if config["use_bias"] else [])


CHANNEL_AFFINE = LayerSpec(
    name="ChannelAffine",
    family="res_mlp",
    kind="layer",
    summary="Per-channel scale and optional shift (ResMLP's Affine).",
    params=(
        Param("use_bias", True, Boolean(), "Add the per-channel `bias` after scaling."),
        Param("weight_init_value", 1, Real(sample_range=(-2.0, 2.0)), "Initial value of every entry of `weight`."),
    ),
    inputs=(Input("inputs", "channels_last"),),
    output_kind="channels_last",
    forward=channel_affine,
    weights=_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.channels_last(draw),),
    examples=(
        Example(
            "documented",
            {},
            ((2, 14, 14, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 14, 14, 192),
            documented_weights={"weight": (192,), "bias": (192,)},
            fixture=False,
        ),
        Example("small_feature_map", {}, ((2, 3, 5, 4),), source="spec"),
        Example("small_tokens_no_bias", {"use_bias": False, "weight_init_value": 0.1}, ((1, 6, 3),), source="spec"),
    ),
    rejections=(
        Rejection({"use_bias": "yes"}, ((1, 2, 2, 3),), "use_bias 'yes' must be True or False"),
        Rejection({"weight_init_value": float("nan")}, ((1, 3),), "weight_init_value nan must be a finite real"),
        Rejection({}, ((1, 2, 2, 2, 3),), "inputs shape (1, 2, 2, 2, 3) must have rank 2, 3 or 4"),
    ),
)

SPECS = (CHANNEL_AFFINE,)
