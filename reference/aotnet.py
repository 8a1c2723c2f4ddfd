"""Blocks from AotNet (aotnet): anti_alias_downsample, batchnorm_with_activation, conv2d_no_bias,
se_module.

These are the convolutional building blocks the other 2021 models are assembled from. All four
are functional blocks: canonical weight names are the Keras variable paths below the ``name``
prefix (``conv/kernel``, ``bn/gamma``, ``1_conv/kernel``, ``anti_alias_down/depthwise_kernel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference import _ops, _sampling
from reference._conv import batch_norm, conv2d, depthwise_conv2d, output_size, pad, pair, tf_same_padding
from reference._errors import reject
from reference._spec import (
    LARGEST_INTEGER,
    REQUIRED,
    Boolean,
    Domain,
    Example,
    Input,
    Integer,
    LayerSpec,
    Maybe,
    OneOf,
    Param,
    Real,
    Rejection,
    Weight,
    _is_integer,
    kernel,
    no_extra_check,
    vector,
)

BATCH_NORM_EPSILON = 1e-5


# --------------------------------------------------------------------------------------------
# Domains shared by the blocks


@dataclass(frozen=True)
class IntOrPair(Domain):
    """A positive integer, or a pair ``(height, width)`` of positive integers (list or tuple).

    An integer stays an integer and a pair becomes a tuple, so a config keeps saying which of
    the two the caller wrote.
    """

    sample_range: tuple[int, int] = (1, 3)

    def check(self, layer, param, value):
        sides = list(value) if isinstance(value, (tuple, list)) and len(value) == 2 else [value]
        if not all(_is_integer(v) and v >= 1 for v in sides):
            reject(layer, param, value, "must be a positive integer or a pair of positive integers")
        if max(sides) > LARGEST_INTEGER:
            reject(layer, param, value, f"must be at most {LARGEST_INTEGER} (int32)")
        return int(value) if len(sides) == 1 else (int(sides[0]), int(sides[1]))

    def describe(self):
        return "positive integer, or a pair (height, width) of them"

    def sample(self, draw, label):
        return _draw_int_or_pair(draw, label, *self.sample_range)


def _draw_int_or_pair(draw, label: str, low: int, high: int):
    """An int, or a (height, width) tuple, each side in ``[low, high]``."""
    if draw.choice(f"{label} form", ("int", "pair")) == "int":
        return draw.integer(label, low, high)
    return (draw.integer(f"{label} height", low, high), draw.integer(f"{label} width", low, high))


def _draw_square(draw, label: str, low: int, high: int):
    """An int, or a (side, side) tuple, the side in ``[low, high]``."""
    side = draw.integer(label, low, high)
    return side if draw.choice(f"{label} form", ("int", "pair")) == "int" else (side, side)


@dataclass(frozen=True)
class PaddingName(Domain):
    """``"VALID"`` or ``"SAME"`` in any letter case, kept as written (the 2021 code upper-cases it)."""

    def check(self, layer, param, value):
        if not isinstance(value, str) or value.upper() not in ("VALID", "SAME"):
            reject(layer, param, value, "must be 'VALID' or 'SAME' (any letter case)")
        return value

    def describe(self):
        return "'VALID' or 'SAME', in any letter case"

    def sample(self, draw, label):
        return draw.choice(label, ("VALID", "SAME", "valid", "same"))


@dataclass(frozen=True)
class Ignored(Domain):
    """Any value: the 2021 signature takes the parameter and never reads it."""

    examples: tuple[Any, ...]

    def check(self, layer, param, value):
        return value

    def describe(self):
        return "any value (ignored)"

    def sample(self, draw, label):
        return draw.choice(label, self.examples)


@dataclass(frozen=True)
class GroupCount(Integer):
    """``groups``: an integer >= 0, where 0 means 1 (the 2021 code replaces 0 by 1)."""

    def check(self, layer, param, value):
        return super().check(layer, param, value) or 1

    def describe(self):
        return "integer >= 0 (0 means 1)"


ACTIVATION_NAMES = tuple(_ops.ACTIVATIONS)


def _activate(name: str | None, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
    return x if name is None else _ops.activation(name, x, overwrite)


# --------------------------------------------------------------------------------------------
# anti_alias_downsample


def binomial_blur_kernel(kernel_size: int, channels: int) -> np.ndarray:
    """The fixed ``(k, k, channels, 1)`` depthwise kernel of :func:`anti_alias_downsample`.

    With ``b_i = C(k-1, i)``, row ``k-1`` of Pascal's triangle, every channel's filter is
    ``b_i * b_j / 2 ** (2 * (k-1))``: a separable binomial blur whose entries sum to 1
    (k=3: ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16``; k=1: ``[[1]]``).
    """
    row = np.array([math.comb(kernel_size - 1, i) for i in range(kernel_size)], dtype=np.float64)
    blur = np.outer(row, row) / 4.0 ** (kernel_size - 1)
    return np.repeat(blur[:, :, None, None], channels, axis=2)


def anti_alias_downsample(inputs: np.ndarray, *, weights, kernel_size=3, strides=2, padding="SAME", trainable=False) -> np.ndarray:
    """A depthwise blur, then subsampling: ``depthwise_conv(pad(x), anti_alias_down/depthwise_kernel)``.

    ``x`` is ``[B, H, W, C]``; the kernel is ``(k, k, C, 1)`` with ``k = kernel_size`` (an int,
    or a pair of equal sides; strides too), and output channel ``c`` is input channel ``c`` correlated with
    ``kernel[:, :, c, 0]``. Its value is fixed (unless ``trainable``, when it is only the
    initial value): with ``b_i = C(k-1, i)``, row ``k-1`` of Pascal's triangle,
    ``kernel[i, j, c, 0] = b_i * b_j / 2 ** (2 * (k-1))`` for every channel (k=3:
    ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16``). Like the Keras layer with its variable, this
    function computes with the kernel it is given; that a freshly built layer holds the binomial
    value is the spec's declared initial value, which the conformance ``init`` check holds
    implementations to.

    Padding is TensorFlow's SAME, per axis with stride ``s`` and size ``n``: the output has
    ``ceil(n / s)`` positions, the total padding is ``max((ceil(n / s) - 1) * s + k - n, 0)``
    zeros, of which ``total // 2`` go before (top / left) and the rest, one more when the total
    is odd, after (bottom / right). Output position ``i`` reads padded rows ``i*s .. i*s+k-1``.

    ``padding`` is ignored (SAME is always used) and ``trainable`` only decides whether training
    may change the kernel, as in the 2021 code.
    """
    blur = weights["anti_alias_down/depthwise_kernel"]
    amounts = tf_same_padding(inputs.shape[1:3], blur.shape[:2], strides)
    return depthwise_conv2d(pad(inputs, amounts), blur, strides)


def _anti_alias_weights(config, input_shape):
    k, channels = pair(config["kernel_size"])[0], input_shape[-1]
    # Trainable, the kernel is an ordinary weight that merely starts as the blur.
    return [Weight("anti_alias_down/depthwise_kernel", (k, k, channels, 1), std=1.0 / k, initial=binomial_blur_kernel(k, channels), fixed=not config["trainable"])]


def _anti_alias_output_shape(config, input_shape):
    batch, height, width, channels = input_shape
    stride_h, stride_w = pair(config["strides"])
    return (batch, math.ceil(height / stride_h), math.ceil(width / stride_w), channels)


def check_depthwise_strides(layer: str, strides) -> None:
    """Depthwise convolutions take equal strides on both axes: TensorFlow's depthwise kernel,
    and so the 2021 code, runs nothing else."""
    stride_h, stride_w = pair(strides)
    if stride_h != stride_w:
        reject(layer, "strides", strides, "must have equal sides for a depthwise convolution (TensorFlow's depthwise kernel, and so the 2021 code, runs no other)")


MAX_BLUR_SIDE = 27
"""The largest anti-alias kernel side: up to 27 every blur weight ``b_i * b_j / 4 ** (k-1)`` is an
exact float64 (``b_i <= C(26, 13) < 2**24``, so ``b_i * b_j < 2**48``, over a power of two); the
2021 default is 3."""


def _anti_alias_check_config(config):
    kernel_h, kernel_w = pair(config["kernel_size"])
    if kernel_h != kernel_w:
        reject(
            "anti_alias_downsample",
            "kernel_size",
            config["kernel_size"],
            "must have equal sides: the 2021 code builds its blur filter from kernel_size[0] alone",
        )
    if kernel_h > MAX_BLUR_SIDE:
        reject(
            "anti_alias_downsample",
            "kernel_size",
            config["kernel_size"],
            f"must be at most {MAX_BLUR_SIDE}: up to there every binomial blur weight is exact in float64",
        )
    check_depthwise_strides("anti_alias_downsample", config["strides"])


def _anti_alias_sample_config(draw):
    return {
        "kernel_size": _draw_square(draw, "kernel size", 1, 5),
        "strides": _draw_square(draw, "strides", 1, 3),
        "padding": draw.choice("padding", ("SAME", "VALID")),
        "trainable": draw.choice("trainable", (False, True)),
    }


def _feature_map(draw, max_side: int = 8, max_channels: int = 8):
    return (
        _sampling.batch(draw),
        draw.integer("height", 1, max_side),
        draw.integer("width", 1, max_side),
        draw.integer("channels", 1, max_channels),
    )


ANTI_ALIAS_DOWNSAMPLE = LayerSpec(
    name="anti_alias_downsample",
    family="aotnet",
    kind="block",
    summary="Anti-aliased downsampling: a fixed binomial depthwise blur with TensorFlow SAME padding and a stride.",
    params=(
        Param("kernel_size", 3, IntOrPair(), "Side k of the k x k blur; a pair must have equal sides."),
        Param("strides", 2, IntOrPair(), "Subsampling step, an int or a pair of equal sides."),
        Param("padding", "SAME", Ignored(("SAME", "VALID")), "Ignored: TensorFlow SAME padding is always used (2021 code)."),
        Param("trainable", False, Boolean(), "Whether training may change the blur kernel; no effect on the forward."),
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=anti_alias_downsample,
    weights=_anti_alias_weights,
    output_shape=_anti_alias_output_shape,
    check=no_extra_check,
    check_config=_anti_alias_check_config,
    sample_config=_anti_alias_sample_config,
    sample_input_shapes=lambda config, draw: (_feature_map(draw),),
    examples=(
        Example(
            "documented",
            {"kernel_size": 3, "strides": 2},
            ((2, 28, 28, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 14, 14, 192),
            documented_weights={"anti_alias_down/depthwise_kernel": (3, 3, 192, 1)},
            fixture=False,
        ),
        Example("documented_config", {"kernel_size": 3, "strides": 2}, ((1, 6, 5, 192),), source="2021 code (07209e2)", documented_weights={"anti_alias_down/depthwise_kernel": (3, 3, 192, 1)}),
        Example("small_odd_sides", {}, ((2, 5, 7, 3),), source="spec"),
        Example("small_k4_stride1", {"kernel_size": 4, "strides": (1, 1)}, ((1, 4, 7, 2),), source="spec"),
        Example("small_k5_stride3_trainable", {"kernel_size": (5, 5), "strides": 3, "trainable": True}, ((1, 6, 2, 4),), source="spec"),
    ),
    rejections=(
        Rejection({"kernel_size": (3, 5)}, ((1, 6, 6, 2),), "kernel_size (3, 5) must have equal sides"),
        Rejection({"kernel_size": 0}, ((1, 6, 6, 2),), "kernel_size 0 must be a positive integer or a pair of positive integers"),
        Rejection({"strides": (2, 0)}, ((1, 6, 6, 2),), "strides (2, 0) must be a positive integer or a pair of positive integers"),
        Rejection({"strides": (1, 2)}, ((1, 6, 6, 2),), "strides (1, 2) must have equal sides for a depthwise convolution"),
        Rejection({"trainable": "no"}, ((1, 6, 6, 2),), "trainable 'no' must be True or False"),
        Rejection({}, ((1, 36, 2),), "inputs shape (1, 36, 2) must have rank 4"),
    ),
    notes=(
        "`padding` is ignored: the blur always uses TensorFlow SAME padding, the extra row or "
        "column of zeros at the bottom / right (2021 code).",
        "The kernel `anti_alias_down/depthwise_kernel` is a fixed, non-trainable constant (the "
        "binomial blur) unless `trainable=True`, which only lets training change it.",
        "The 2021 code builds the blur from `kernel_size[0]` alone, so a pair with different "
        "sides cannot be built there; this spec rejects it. Strides may be a pair of equal sides; "
        "unequal strides are rejected, since TensorFlow's depthwise convolution (and so the 2021 "
        "code) cannot run them.",
        "`kernel_size` is at most 27, this spec's bound: up to there every blur weight "
        "`b_i * b_j / 4 ** (k-1)` is an exact float64 (beyond about 513 they leave float64's range); "
        "the 2021 default is 3.",
    ),
)


# --------------------------------------------------------------------------------------------
# batchnorm_with_activation


def batchnorm_with_activation(inputs: np.ndarray, *, weights, activation="relu", zero_gamma=False) -> np.ndarray:
    """Inference batch normalisation over the channel axis, then the activation.

    ``y = (x - bn/moving_mean) / sqrt(bn/moving_variance + 1e-5) * bn/gamma + bn/beta`` per
    channel (the last axis of ``[B, H, W, C]``), then ``activation(y)`` by its Keras name;
    ``activation=None`` returns ``y``. ``zero_gamma`` only makes the initial gamma 0 instead
    of 1 and has no effect once weights are given. (Training uses batch statistics and
    momentum 0.9; the spec defines inference.)
    """
    normalised = batch_norm(
        inputs, weights["bn/gamma"], weights["bn/beta"], weights["bn/moving_mean"], weights["bn/moving_variance"], BATCH_NORM_EPSILON
    )
    return _activate(activation, normalised, overwrite=True)


def batch_norm_weights(prefix: str, channels: int, zero_gamma: bool = False) -> list[Weight]:
    """``<prefix>gamma, beta, moving_mean, moving_variance`` with their initial values: gamma 1
    (0 with ``zero_gamma``), beta 0, moving mean 0, moving variance 1."""
    return [
        vector(f"{prefix}gamma", channels, initial=0.0 if zero_gamma else 1.0),
        vector(f"{prefix}beta", channels, initial=0.0),
        vector(f"{prefix}moving_mean", channels, initial=0.0),
        vector(f"{prefix}moving_variance", channels, positive=True, initial=1.0),
    ]


BATCHNORM_WITH_ACTIVATION = LayerSpec(
    name="batchnorm_with_activation",
    family="aotnet",
    kind="block",
    summary="BatchNormalization (epsilon 1e-5, momentum 0.9) on the channel axis, then an optional activation.",
    params=(
        Param("activation", "relu", Maybe(OneOf(ACTIVATION_NAMES)), "Keras name of the activation after the normalisation; None for none."),
        Param("zero_gamma", False, Boolean(), "Start gamma at 0 instead of 1 (only the initial value)."),
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=batchnorm_with_activation,
    weights=lambda config, input_shape: batch_norm_weights("bn/", input_shape[-1], config["zero_gamma"]),
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_feature_map(draw),),
    examples=(
        Example(
            "documented",
            {},
            ((2, 28, 28, 64),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 28, 28, 64),
            documented_weights={"bn/gamma": (64,), "bn/beta": (64,), "bn/moving_mean": (64,), "bn/moving_variance": (64,)},
            fixture=False,
        ),
        Example("documented_config", {}, ((1, 2, 3, 64),), source="2021 code (07209e2)", documented_weights={"bn/gamma": (64,), "bn/beta": (64,), "bn/moving_mean": (64,), "bn/moving_variance": (64,)}),
        Example("small_relu", {}, ((2, 3, 4, 5),), source="spec"),
        Example("small_no_activation_zero_gamma", {"activation": None, "zero_gamma": True}, ((1, 2, 5, 3),), source="spec"),
        Example("small_gelu", {"activation": "gelu"}, ((3, 4, 1, 2),), source="spec"),
    ),
    rejections=(
        Rejection({"activation": "mish"}, ((1, 2, 2, 3),), "activation 'mish' must be one of"),
        Rejection({"zero_gamma": 1}, ((1, 2, 2, 3),), "zero_gamma 1 must be True or False"),
        Rejection({}, ((2, 5, 3),), "inputs shape (2, 5, 3) must have rank 4"),
    ),
    notes=(
        "`zero_gamma` only sets the initial gamma (0 instead of 1); it does not change the forward "
        "for given weights.",
        "Inference semantics: the moving statistics normalise, epsilon 1e-5. Keras' momentum 0.9 is "
        "PyTorch's momentum 0.1.",
        "The 2021 code normalises axis 3, so the input is a rank-4 feature map.",
    ),
)


# --------------------------------------------------------------------------------------------
# conv2d_no_bias


def same_padding_amount(kernel_size) -> int:
    """Zeros added on every side of both spatial axes for ``padding="SAME"``: ``max(kh, kw) // 2``."""
    return max(pair(kernel_size)) // 2


def is_depthwise(config) -> bool:
    """The 2021 rule: ``groups == filters`` (after ``groups`` 0 -> 1) builds a depthwise convolution."""
    return config["groups"] == config["filters"]


def conv_padding(config) -> int:
    """Zeros on every side for this config's ``padding`` (compared case-insensitively)."""
    return same_padding_amount(config["kernel_size"]) if config["padding"].upper() == "SAME" else 0


def conv2d_no_bias(inputs: np.ndarray, *, weights, filters, kernel_size, strides=1, padding="VALID", use_bias=False, groups=1) -> np.ndarray:
    """Explicit zero padding, then a VALID convolution (grouped or depthwise), plus a bias if
    ``use_bias``.

    Padding: ``padding`` is compared case-insensitively. SAME adds ``p = max(kh, kw) // 2``
    zeros on every side of both spatial axes (for a pair kernel the larger side sets both
    axes; an even kernel therefore grows the map); VALID adds none. Output position ``i``
    along an axis with stride ``s`` reads padded rows ``i*s .. i*s+k-1``, so there are
    ``(n + 2p - k) // s + 1`` positions.

    Convolution (cross-correlation) of ``x`` ``[B, H, W, C]``:

    - ``groups != filters``: ``conv/kernel`` ``(kh, kw, C / groups, filters)``. Input and
      output channels split into ``groups`` contiguous blocks; output channel ``o`` belongs to
      block ``g = o // (filters / groups)`` and sums over input channels
      ``g * C/groups + c`` with ``kernel[:, :, c, o]``.
    - ``groups == filters`` (the 2021 code's depthwise rule, including the default
      ``groups=1`` with ``filters=1``): ``conv/depthwise_kernel`` ``(kh, kw, C, 1)``; output
      channel ``c`` is input channel ``c`` correlated with ``kernel[:, :, c, 0]``. The output
      keeps the input's ``C`` channels whatever ``filters`` is; strides have equal sides.

    ``conv/bias`` has one entry per output channel. ``groups`` 0 means 1.
    """
    config = {"filters": filters, "kernel_size": kernel_size, "padding": padding, "groups": groups}
    p = conv_padding(config)
    padded = pad(inputs, ((p, p), (p, p)))
    bias = weights["conv/bias"] if use_bias else None
    if is_depthwise(config):
        return depthwise_conv2d(padded, weights["conv/depthwise_kernel"], strides, bias=bias)
    return conv2d(padded, weights["conv/kernel"], strides, groups=groups, bias=bias)


def _conv_output_shape(config, input_shape):
    batch, height, width, channels = input_shape
    (kernel_h, kernel_w), (stride_h, stride_w), p = pair(config["kernel_size"]), pair(config["strides"]), conv_padding(config)
    out_channels = channels if is_depthwise(config) else config["filters"]
    return (batch, output_size(height + 2 * p, kernel_h, stride_h), output_size(width + 2 * p, kernel_w, stride_w), out_channels)


def _conv_weights(config, input_shape):
    kernel_h, kernel_w = pair(config["kernel_size"])
    channels = input_shape[-1]
    if is_depthwise(config):
        # Each output sums kh * kw products, so that is the fan-in.
        weights = [Weight("conv/depthwise_kernel", (kernel_h, kernel_w, channels, 1), std=1.0 / math.sqrt(kernel_h * kernel_w))]
        out_channels = channels
    else:
        weights = [kernel("conv/kernel", (kernel_h, kernel_w, channels // config["groups"], config["filters"]))]
        out_channels = config["filters"]
    return weights + ([vector("conv/bias", out_channels)] if config["use_bias"] else [])


def _conv_check_config(config):
    if is_depthwise(config):
        check_depthwise_strides("conv2d_no_bias", config["strides"])
    elif config["filters"] % config["groups"]:
        reject("conv2d_no_bias", "filters", config["filters"], f"is not a multiple of groups {config['groups']}")


def _conv_check(config, input_shape):
    _, height, width, channels = input_shape
    if not is_depthwise(config) and channels % config["groups"]:
        reject("conv2d_no_bias", "input channels", channels, f"is not a multiple of groups {config['groups']}")
    p = conv_padding(config)
    for axis, size, side in zip(("height", "width"), (height, width), pair(config["kernel_size"])):
        if size + 2 * p < side:
            reject("conv2d_no_bias", axis, size, f"plus padding {2 * p} is smaller than the kernel's {axis} {side}")


def _conv_sample_config(draw):
    groups = draw.integer("groups", 1, 3)
    # filters == groups (one filter per group) is the depthwise path.
    filters = groups * draw.integer("filters per group", 1, 3)
    return {
        "filters": filters,
        "kernel_size": _draw_int_or_pair(draw, "kernel size", 1, 4),
        "strides": _draw_square(draw, "strides", 1, 3) if filters == groups else _draw_int_or_pair(draw, "strides", 1, 3),
        "padding": PaddingName().sample(draw, "padding"),
        "use_bias": draw.choice("use_bias", (False, True)),
        "groups": groups,
    }


def _conv_sample_input_shapes(config, draw):
    p = conv_padding(config)
    kernel_h, kernel_w = pair(config["kernel_size"])
    smallest_h, smallest_w = max(1, kernel_h - 2 * p), max(1, kernel_w - 2 * p)
    if is_depthwise(config):
        channels = draw.integer("channels", 1, 6)
    else:
        channels = config["groups"] * draw.integer("channels per group", 1, 3)
    return ((_sampling.batch(draw), smallest_h - 1 + draw.integer("height", 1, 6), smallest_w - 1 + draw.integer("width", 1, 6), channels),)


CONV2D_NO_BIAS = LayerSpec(
    name="conv2d_no_bias",
    family="aotnet",
    kind="block",
    summary="Conv2D without bias by default, with PyTorch-style symmetric SAME padding; depthwise when groups == filters.",
    params=(
        Param("filters", REQUIRED, Integer(minimum=1), "Output channels (ignored on the depthwise path, which keeps the input's channels)."),
        Param("kernel_size", REQUIRED, IntOrPair(), "Kernel side, or a (height, width) pair."),
        Param("strides", 1, IntOrPair(), "Step, an int or a (height, width) pair."),
        Param("padding", "VALID", PaddingName(), "SAME pads max(kernel_size) // 2 zeros on every side; VALID pads none."),
        Param("use_bias", False, Boolean(), "Add `conv/bias`."),
        Param("groups", 1, GroupCount(minimum=0), "Channel groups; groups == filters selects a depthwise convolution."),
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=conv2d_no_bias,
    weights=_conv_weights,
    output_shape=_conv_output_shape,
    check=_conv_check,
    check_config=_conv_check_config,
    sample_config=_conv_sample_config,
    sample_input_shapes=_conv_sample_input_shapes,
    examples=(
        Example(
            "documented",
            {"filters": 128, "kernel_size": 3, "strides": 2, "padding": "SAME"},
            ((2, 28, 28, 64),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 14, 14, 128),
            documented_weights={"conv/kernel": (3, 3, 64, 128)},
            fixture=False,
        ),
        Example("documented_config", {"filters": 128, "kernel_size": 3, "strides": 2, "padding": "SAME"}, ((1, 5, 6, 64),), source="2021 code (07209e2)", documented_weights={"conv/kernel": (3, 3, 64, 128)}),
        Example("small_grouped_same_bias", {"filters": 6, "kernel_size": 3, "padding": "same", "use_bias": True, "groups": 2}, ((2, 5, 4, 4),), source="spec"),
        Example("small_pair_kernel_pair_strides", {"filters": 5, "kernel_size": (1, 3), "strides": (2, 1), "padding": "SAME"}, ((1, 4, 5, 3),), source="spec"),
        Example("small_depthwise_keeps_channels", {"filters": 3, "kernel_size": 2, "strides": 2, "groups": 3, "use_bias": True}, ((2, 5, 6, 6),), source="spec"),
    ),
    rejections=(
        Rejection({"kernel_size": 3}, ((1, 5, 5, 4),), "config parameter 'filters' is required"),
        Rejection({"filters": 4}, ((1, 5, 5, 4),), "config parameter 'kernel_size' is required"),
        Rejection({"filters": 4, "kernel_size": (3, 0)}, ((1, 5, 5, 4),), "kernel_size (3, 0) must be a positive integer or a pair of positive integers"),
        Rejection({"filters": 4, "kernel_size": 3, "strides": 0}, ((1, 5, 5, 4),), "strides 0 must be a positive integer or a pair"),
        Rejection({"filters": 4, "kernel_size": 3, "padding": "full"}, ((1, 5, 5, 4),), "padding 'full' must be 'VALID' or 'SAME'"),
        Rejection({"filters": 4, "kernel_size": 3, "groups": -1}, ((1, 5, 5, 4),), "groups -1 must be >= 0"),
        Rejection({"filters": 6, "kernel_size": 3, "groups": 4}, ((1, 5, 5, 8),), "filters 6 is not a multiple of groups 4"),
        Rejection({"filters": 6, "kernel_size": 3, "groups": 2}, ((1, 5, 5, 5),), "input channels 5 is not a multiple of groups 2"),
        Rejection({"filters": 1, "kernel_size": 3, "strides": (2, 1)}, ((1, 5, 5, 4),), "strides (2, 1) must have equal sides for a depthwise convolution"),
        Rejection({"filters": 4, "kernel_size": (3, 1)}, ((1, 2, 5, 4),), "height 2 plus padding 0 is smaller than the kernel's height 3"),
        Rejection({"filters": 4, "kernel_size": 3}, ((1, 25, 4),), "inputs shape (1, 25, 4) must have rank 4"),
    ),
    notes=(
        "SAME pads `max(kernel_size) // 2` zeros on every side, then convolves VALID, for every "
        "stride (PyTorch-style symmetric padding, not TensorFlow's SAME). For a pair kernel the "
        "larger side sets the padding of both axes, and an even kernel grows the map, as in the "
        "2021 code. `padding` is compared case-insensitively; this spec rejects anything other "
        "than VALID or SAME (the 2021 code treated every other string as VALID).",
        "`groups == filters` builds a depthwise convolution `conv/depthwise_kernel (kh, kw, C, 1)` "
        "whose output keeps the input's C channels whatever `filters` is (2021 code), so the "
        "default groups=1 with filters=1 is depthwise too; input channels need not be a multiple "
        "of groups there, but its strides must have equal sides (TensorFlow's depthwise "
        "convolution, and so the 2021 code, runs no other). Otherwise input channels and filters "
        "must be multiples of groups, and strides may differ per axis.",
        "`groups=0` means 1, as in the 2021 code. Extra Keras keyword arguments of the 2021 "
        "signature (`**kwargs`) go to the Keras convolution layer and are outside this spec.",
    ),
)


# --------------------------------------------------------------------------------------------
# se_module


def se_reduction(channels: int, se_ratio: float) -> int:
    """Width of the squeeze: ``int(channels * se_ratio)``, the float product truncated toward
    zero (the 2021 rule; C=100 and 0.29 give 28)."""
    return int(channels * se_ratio)


def se_module(inputs: np.ndarray, *, weights, se_ratio=0.25, activation="relu", use_bias=True) -> np.ndarray:
    """Squeeze-and-excitation: ``x * sigmoid(2_conv(act(1_conv(mean_hw(x)))))``.

    ``x`` is ``[B, H, W, C]``. ``mean_hw`` averages over H and W per sample and channel
    (``[B, 1, 1, C]``); ``1_conv`` is a 1x1 convolution to ``R = int(C * se_ratio)`` channels
    (``1_conv/kernel (1, 1, C, R)``, plus ``1_conv/bias (R,)`` when ``use_bias``); ``act`` is the
    activation by its Keras name (None is linear); ``2_conv`` maps back to C channels
    (``2_conv/kernel (1, 1, R, C)``, plus ``2_conv/bias (C,)``). The sigmoid gate ``[B, 1, 1, C]``
    multiplies every position of ``x``.
    """
    squeezed = inputs.mean(axis=(1, 2), keepdims=True)
    hidden = squeezed @ weights["1_conv/kernel"][0, 0]
    if use_bias:
        hidden = hidden + weights["1_conv/bias"]
    gate = _activate(activation, hidden) @ weights["2_conv/kernel"][0, 0]
    if use_bias:
        gate = gate + weights["2_conv/bias"]
    return inputs * _ops.sigmoid(gate)


def _se_weights(config, input_shape):
    channels = input_shape[-1]
    reduction = se_reduction(channels, config["se_ratio"])
    weights = [kernel("1_conv/kernel", (1, 1, channels, reduction))]
    weights += [vector("1_conv/bias", reduction)] if config["use_bias"] else []
    weights += [kernel("2_conv/kernel", (1, 1, reduction, channels))]
    weights += [vector("2_conv/bias", channels)] if config["use_bias"] else []
    return weights


def _se_check(config, input_shape):
    channels, ratio = input_shape[-1], config["se_ratio"]
    if channels * ratio > LARGEST_INTEGER:
        reject("se_module", "se_ratio", ratio, f"makes int({channels} * {ratio}) channels for 1_conv, more than {LARGEST_INTEGER} (int32)")
    reduction = se_reduction(channels, ratio)
    if reduction < 1:
        reject("se_module", "se_ratio", ratio, f"leaves int({channels} * {ratio}) = {reduction} channels for 1_conv; it needs at least 1")


def _se_sample_input_shapes(config, draw):
    fewest = math.ceil(1.0 / config["se_ratio"])
    while se_reduction(fewest, config["se_ratio"]) < 1:  # ceil(1 / r) * r can round below 1
        fewest += 1
    batch, height, width = _sampling.batch(draw), draw.integer("height", 1, 6), draw.integer("width", 1, 6)
    return ((batch, height, width, draw.integer("channels", fewest, fewest + 8)),)


SE_MODULE = LayerSpec(
    name="se_module",
    family="aotnet",
    kind="block",
    summary="Squeeze-and-excitation: global average pool, 1x1 conv down, activation, 1x1 conv up, sigmoid gate.",
    params=(
        Param("se_ratio", 0.25, Real(0.0, math.inf, sample_range=(0.1, 1.0)), "Squeeze width as a fraction of the channels: int(C * se_ratio)."),
        Param("activation", "relu", Maybe(OneOf(ACTIVATION_NAMES)), "Keras name of the activation between the two 1x1 convolutions; None is linear."),
        Param("use_bias", True, Boolean(), "Biases on both 1x1 convolutions."),
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=se_module,
    weights=_se_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=_se_check,
    sample_input_shapes=_se_sample_input_shapes,
    examples=(
        Example(
            "documented",
            {"se_ratio": 0.25},
            ((2, 28, 28, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 28, 28, 192),
            documented_weights={"1_conv/kernel": (1, 1, 192, 48), "1_conv/bias": (48,), "2_conv/kernel": (1, 1, 48, 192), "2_conv/bias": (192,)},
            fixture=False,
        ),
        Example(
            "documented_config",
            {"se_ratio": 0.25},
            ((1, 2, 3, 192),),
            source="2021 code (07209e2)",
            documented_weights={"1_conv/kernel": (1, 1, 192, 48), "1_conv/bias": (48,), "2_conv/kernel": (1, 1, 48, 192), "2_conv/bias": (192,)},
        ),
        Example("small_truncated_width", {"se_ratio": 0.29}, ((2, 3, 4, 10),), source="spec"),
        Example("small_swish_no_bias", {"se_ratio": 0.5, "activation": "swish", "use_bias": False}, ((1, 4, 1, 6),), source="spec"),
    ),
    rejections=(
        Rejection({"se_ratio": 0.1}, ((1, 3, 3, 8),), "se_ratio 0.1 leaves int(8 * 0.1) = 0 channels for 1_conv; it needs at least 1"),
        Rejection({"se_ratio": -0.5}, ((1, 3, 3, 8),), "se_ratio -0.5 must be a finite real in [0.0, inf)"),
        Rejection({"activation": "mish"}, ((1, 3, 3, 8),), "activation 'mish' must be one of"),
        Rejection({"use_bias": None}, ((1, 3, 3, 8),), "use_bias None must be True or False"),
        Rejection({}, ((1, 9, 8),), "inputs shape (1, 9, 8) must have rank 4"),
    ),
    notes=(
        "The squeeze width is `int(C * se_ratio)`, truncating the float product (2021 code; C=100, "
        "se_ratio 0.29 gives 28), not the later make_divisible rounding. A ratio that leaves no "
        "channel is rejected.",
        "`activation=None` is the linear activation, as Keras' `Activation(None)` is.",
    ),
)

SPECS = (ANTI_ALIAS_DOWNSAMPLE, BATCHNORM_WITH_ACTIVATION, CONV2D_NO_BIAS, SE_MODULE)
