"""Keras 3 blocks from AotNet: anti_alias_downsample, batchnorm_with_activation, conv2d_no_bias,
se_module.

Each block is a function of a Keras tensor with the 2021 signature. Its layers are named
``name + "<sublayer>"`` (``conv``, ``pad``, ``bn``, ``1_conv``, ``anti_alias_down``...), so the
variables read ``<name>conv/kernel``, ``<name>bn/gamma``; with ``name`` None Keras picks unique
names, as in 2021. se_module's default ``name=""`` names its sublayers ``1_conv`` and ``2_conv``
exactly (the canonical paths), so a model that calls it twice names each call, as in 2021.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from impls.tf import _activations
from impls.tf._checks import checked_config, checked_shapes
from impls.tf._layers import Conv2D

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def conv_kernel_initializer():
    """He-normal over fan-out, the 2021 initialiser of every convolution here (not semantics)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


@keras.saving.register_keras_serializable(package="attnconf")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Keras' DepthwiseConv2D with its kernel variable named ``depthwise_kernel``, as Keras 2
    named it (Keras 3 says ``kernel``), so variable paths match the 2021 weights."""

    def add_weight(self, *args, name=None, **kwargs):
        return super().add_weight(*args, name="depthwise_kernel" if name == "kernel" else name, **kwargs)


@keras.saving.register_keras_serializable(package="attnconf")
class BinomialBlur(keras.initializers.Initializer):
    """Initialises a ``(k, k, C, 1)`` depthwise kernel to the binomial blur: every channel gets
    the outer product of ``[1/2, 1/2]`` convolved with itself ``k - 1`` times."""

    def __call__(self, shape, dtype=None):
        side, _, channels, multiplier = shape
        row = np.array([1.0])
        for _ in range(side - 1):
            row = np.convolve(row, [0.5, 0.5])
        blur = np.outer(row, row)[:, :, None, None] * np.ones((1, 1, channels, multiplier))
        return ops.convert_to_tensor(blur, dtype=dtype or keras.config.floatx())


def _sides(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def batchnorm_with_activation(inputs, activation="relu", zero_gamma=False, name=None):
    """BatchNormalization over the channels of ``[batch, height, width, channels]`` (momentum
    0.9, epsilon 1e-5; gamma starts at 0 with ``zero_gamma``), then ``activation`` unless None.
    Layers: ``name + "bn"``, ``name + activation``."""
    config = checked_config("batchnorm_with_activation", activation=activation, zero_gamma=zero_gamma)
    checked_shapes("batchnorm_with_activation", config, inputs.shape)
    nn = keras.layers.BatchNormalization(
        axis=-1,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        gamma_initializer="zeros" if config["zero_gamma"] else "ones",
        name=name and name + "bn",
    )(inputs)
    if config["activation"] is not None:
        nn = keras.layers.Activation(_activations.get(config["activation"]), name=name and name + config["activation"])(nn)
    return nn


def conv2d_no_bias(inputs, filters, kernel_size, strides=1, padding="VALID", use_bias=False, groups=1, name=None, **kwargs):
    """A convolution without bias by default. ``padding="SAME"`` (any case) first pads
    ``max(kernel_size) // 2`` zeros on every side (layer ``name + "pad"``); the convolution
    itself is always VALID (layer ``name + "conv"``). ``groups == filters`` builds a depthwise
    convolution that keeps the input's channels; ``groups`` 0 means 1. ``kwargs`` go to the
    convolution layer, as in 2021."""
    config = checked_config(
        "conv2d_no_bias", filters=filters, kernel_size=kernel_size, strides=strides, padding=padding, use_bias=use_bias, groups=groups
    )
    kernel_h, kernel_w = _sides(config["kernel_size"])
    pad = max(kernel_h, kernel_w) // 2 if config["padding"].upper() == "SAME" else 0
    shape = tuple(inputs.shape)
    if len(shape) == 4:
        # An unknown height or width is only known at call time: check it as one that fits.
        shape = (shape[0], *(kernel_h if shape[1] is None else shape[1], kernel_w if shape[2] is None else shape[2]), shape[3])
    checked_shapes("conv2d_no_bias", config, shape)
    if pad:
        inputs = keras.layers.ZeroPadding2D(padding=pad, name=name and name + "pad")(inputs)
    common = {
        "kernel_size": (kernel_h, kernel_w),
        "strides": config["strides"],
        "padding": "valid",
        "use_bias": config["use_bias"],
        "name": name and name + "conv",
    }
    if config["groups"] == config["filters"]:
        return DepthwiseConv2D(depthwise_initializer=conv_kernel_initializer(), **common, **kwargs)(inputs)
    return Conv2D(config["filters"], groups=config["groups"], kernel_initializer=conv_kernel_initializer(), **common, **kwargs)(inputs)


def anti_alias_downsample(inputs, kernel_size=3, strides=2, padding="SAME", trainable=False, name=None):
    """Blur every channel with the fixed binomial kernel and subsample by ``strides``, with
    TensorFlow SAME padding (layer ``name + "anti_alias_down"``). ``padding`` is ignored;
    ``trainable`` lets training change the kernel, as in 2021."""
    config = checked_config("anti_alias_downsample", kernel_size=kernel_size, strides=strides, padding=padding, trainable=trainable)
    checked_shapes("anti_alias_downsample", config, inputs.shape)
    return DepthwiseConv2D(
        kernel_size=_sides(config["kernel_size"]),
        strides=config["strides"],
        padding="same",
        use_bias=False,
        trainable=config["trainable"],
        depthwise_initializer=BinomialBlur(),
        name=name and name + "anti_alias_down",
    )(inputs)


def se_module(inputs, se_ratio=0.25, activation="relu", use_bias=True, name=""):
    """Squeeze-and-excitation: mean over height and width, 1x1 conv to ``int(C * se_ratio)``
    channels (``name + "1_conv"``), activation, 1x1 conv back to C (``name + "2_conv"``),
    sigmoid, times the input."""
    config = checked_config("se_module", se_ratio=se_ratio, activation=activation, use_bias=use_bias)
    checked_shapes("se_module", config, inputs.shape)
    channels = inputs.shape[-1]
    reduction = int(channels * config["se_ratio"])
    se = ops.mean(inputs, axis=(1, 2), keepdims=True)
    se = keras.layers.Conv2D(reduction, 1, use_bias=config["use_bias"], kernel_initializer=conv_kernel_initializer(), name=name + "1_conv")(se)
    se = keras.layers.Activation(_activations.get(config["activation"]))(se)
    se = keras.layers.Conv2D(channels, 1, use_bias=config["use_bias"], kernel_initializer=conv_kernel_initializer(), name=name + "2_conv")(se)
    se = keras.layers.Activation("sigmoid")(se)
    return keras.layers.Multiply()([inputs, se])


__all__ = ["anti_alias_downsample", "batchnorm_with_activation", "conv2d_no_bias", "se_module"]
