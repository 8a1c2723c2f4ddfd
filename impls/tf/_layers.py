"""Keras layers shared by several families."""

from __future__ import annotations

import keras

FLOAT32_STATISTICS = True
"""Half-precision inputs are normalised in float32 (see ``CenteredLayerNormalization.call``);
``tests/test_half_precision.py`` turns this off to show that it matters."""


@keras.saving.register_keras_serializable(package="attnconf")
class CenteredLayerNormalization(keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` over the last axis, computed as
    ``(x - mean) * rsqrt(variance + epsilon) * gamma + beta``: same weights, config and maths.

    Keras 3 computes ``x * inv + (beta - mean * inv)`` with ``inv = gamma * rsqrt(variance +
    epsilon)``. Where a token's channels are (nearly) equal, as with a single channel, the two
    products cancel and leave a float32 error of about ``eps * |x| / sqrt(epsilon)`` (1e-4 at
    epsilon 1e-5) on an exact answer of ``beta``. Centring first leaves only the mean's rounding.
    """

    def __init__(self, axis=-1, rms_scaling=False, **kwargs):
        if axis not in (-1, [-1]):
            raise ValueError(f"CenteredLayerNormalization: axis {axis!r} must be -1 (the channels)")
        if rms_scaling:
            raise ValueError("CenteredLayerNormalization: rms_scaling True is not a LayerNorm; use keras.layers.RMSNormalization")
        super().__init__(axis=-1, **kwargs)

    def call(self, inputs):
        # float16 / bfloat16 inputs are normalised in float32, as the 2021 tf.keras
        # LayerNormalization did under mixed policies (an explicit upcast "at least as numerically
        # stable as the fused version", whose kernel accumulates in float32) and as PyTorch's
        # layer_norm does: in half, a token whose channels are nearly equal loses its centred values
        # to the rounding of its mean (spatial_gating_block over 2 channels fails float16 without it).
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if FLOAT32_STATISTICS and dtype in ("float16", "bfloat16"):
            return keras.ops.cast(self._normalise(keras.ops.cast(inputs, "float32")), dtype)
        return self._normalise(inputs)

    def _normalise(self, inputs):
        # Not keras.ops.moments: its variance is mean(x^2) - mean^2, which cancels for channels
        # of nearly equal value; the mean of the squared deviations does not.
        centred = inputs - keras.ops.mean(inputs, axis=-1, keepdims=True)
        variance = keras.ops.mean(keras.ops.square(centred), axis=-1, keepdims=True)
        outputs = centred * keras.ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            outputs = outputs * keras.ops.cast(self.gamma, outputs.dtype)
        if self.beta is not None:
            outputs = outputs + keras.ops.cast(self.beta, outputs.dtype)
        return outputs


@keras.saving.register_keras_serializable(package="attnconf")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (same weights, config and maths) whose grouped convolution runs
    as one ungrouped convolution per group, concatenated.

    On TensorFlow, Keras runs a grouped convolution through XLA (TensorFlow's CPU kernel has
    none), compiling it anew for every input shape: about 0.15 s per model, which made grouped
    layers the slowest part of the conformance run. Per-group convolutions sum the same products
    over the same ``in_channels // groups`` channels, on every backend.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        axis = -1 if self.data_format == "channels_last" else 1
        parts = zip(keras.ops.split(inputs, self.groups, axis=axis), keras.ops.split(kernel, self.groups, axis=-1))
        return keras.ops.concatenate([super(Conv2D, self).convolution_op(x, k) for x, k in parts], axis=axis)
