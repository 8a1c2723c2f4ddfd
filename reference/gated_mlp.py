"""Blocks from gMLP (gated_mlp): spatial_gating_block."""

from __future__ import annotations

import numpy as np

from reference import _sampling
from reference._conv import layer_norm
from reference._errors import reject
from reference._spec import Example, Input, LayerSpec, Rejection, kernel, vector

GATING_LAYER_NORM_EPSILON = 1e-5
"""The epsilon of ``vv_ln`` (the 2021 module's own ``layer_norm`` helper)."""


def spatial_gating_block(inputs: np.ndarray, *, weights) -> np.ndarray:
    """The spatial gating unit of gMLP on ``x`` of shape ``[B, N, C]``, C even.

    1. Split the channels into halves in order: ``u = x[..., :C/2]`` (the gate) and
       ``v = x[..., C/2:]``.
    2. ``v = (v - mean(v)) / sqrt(var(v) + 1e-5) * vv_ln/gamma + vv_ln/beta`` over the C/2
       channels of each token (biased variance, epsilon 1e-5).
    3. ``vv_dense`` mixes the tokens: ``s[b, m, c] = sum_n v[b, n, c] * vv_dense/kernel[n, m]
       + vv_dense/bias[m]`` (the 2021 code transposes ``v`` to ``[B, C/2, N]``, applies a Dense
       of N units and transposes back). The kernel is ``(N, N)``, the bias ``(N,)``: one
       value per output token, shared by every channel.
    4. Output ``u * s``, of shape ``[B, N, C/2]``.
    """
    gate, gated = np.split(inputs, 2, axis=-1)
    normalised = layer_norm(gated, weights["vv_ln/gamma"], weights["vv_ln/beta"], GATING_LAYER_NORM_EPSILON)
    spatial = np.matmul(weights["vv_dense/kernel"].T, normalised)  # s[b, m, c] = sum_n kernel[n, m] * v[b, n, c]
    spatial += weights["vv_dense/bias"][:, None]
    spatial *= gate
    return spatial


def _weights(config, input_shape):
    _, tokens, channels = input_shape
    half = channels // 2
    return [
        vector("vv_ln/gamma", half, initial=1.0),
        vector("vv_ln/beta", half, initial=0.0),
        kernel("vv_dense/kernel", (tokens, tokens)),
        # The 2021 code starts the bias at ones (with a near-zero random kernel, so a fresh unit
        # passes the gate half through); the kernel's initialiser is random, so not declared.
        vector("vv_dense/bias", tokens, initial=1.0),
    ]


def _check(config, input_shape):
    channels = input_shape[-1]
    if channels % 2:
        reject("spatial_gating_block", "inputs channels", channels, "must be even: the block splits them into a gate half and a gated half")


def _sample_input_shapes(config, draw):
    pairs = draw.integer("channel pairs", 1, _sampling.MAX_CHANNELS // 2)
    return ((_sampling.batch(draw), draw.integer("tokens", 1, 2 * _sampling.MAX_SIDE), 2 * pairs),)


SPATIAL_GATING_BLOCK = LayerSpec(
    name="spatial_gating_block",
    family="gated_mlp",
    kind="block",
    summary="gMLP spatial gating unit: the first channel half gates a LayerNorm'd, token-mixed second half.",
    params=(),
    inputs=(Input("inputs", "tokens", "C must be even."),),
    output_kind="tokens",
    forward=spatial_gating_block,
    weights=_weights,
    output_shape=lambda config, input_shape: (*input_shape[:2], input_shape[2] // 2),
    check=_check,
    sample_input_shapes=_sample_input_shapes,
    examples=(
        Example(
            "documented",
            {},
            ((2, 784, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 784, 96),
            documented_weights={
                "vv_ln/gamma": (96,),
                "vv_ln/beta": (96,),
                "vv_dense/kernel": (784, 784),
                "vv_dense/bias": (784,),
            },
            fixture=False,
        ),
        # vv_dense depends on N, so batch 1 is the only saving; its file would still be about
        # 2.1 MB, over the per-fixture budget.
        Example("readme_config", {}, ((1, 784, 192),), source="2021 code (07209e2)", fixture=False),
        Example("small", {}, ((2, 5, 6),), source="spec"),
        Example("two_channels", {}, ((3, 4, 2),), source="spec"),
        Example("one_token", {}, ((2, 1, 8),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((1, 4, 5),), "spatial_gating_block: inputs channels 5 must be even"),
        Rejection({}, ((2, 3, 1),), "inputs channels 1 must be even"),
        Rejection({}, ((1, 2, 4, 6),), "inputs shape (1, 2, 4, 6) must have rank 3"),
    ),
    notes=(
        "Which half gates: the 2021 code splits with `tf.split(inputs, 2, axis=-1)` into `uu, vv`; "
        "the first half `uu` is the gate and passes unchanged, the second half `vv` is normalised "
        "and mixed over tokens. Odd channel counts cannot be split and are rejected.",
        "The LayerNorm epsilon is 1e-5 (the 2021 module's own `layer_norm`).",
        "A freshly built block holds `vv_dense/bias` = 1 and LayerNorm gamma 1, beta 0 (declared as "
        "initial values); the 2021 kernel initialiser is a truncated normal of std 1e-6, random, "
        "so not part of the spec.",
    ),
)

SPECS = (SPATIAL_GATING_BLOCK,)
