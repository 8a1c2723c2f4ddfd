"""Layers from CoaT (coat): ConvPositionalEncoding, ConvRelativePositionalEncoding, layer_norm.

The two positional encodings work on token sequences whose token 0 is a class token and whose
other ``N - 1`` tokens are the pixels of a square grid, row-major: token ``1 + y * side + x`` is
row ``y``, column ``x``. The 2021 code takes the side as ``int(sqrt(N - 1))`` and silently
truncates a non-square count; this spec rejects it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from reference import _sampling
from reference._conv import depthwise_conv2d, layer_norm as normalize_last_axis, pad, symmetric_padding
from reference._errors import reject
from reference._spec import Domain, Example, Input, Integer, LayerSpec, Param, Rejection, Weight, no_extra_check, vector

LAYER_NORM_EPSILON = 1e-6
"""The value of the 2021 constant (its ``layer_norm`` docstring says 1e-5)."""


# --------------------------------------------------------------------------------------------
# Shared rules


def grid_side(layer: str, tokens: int) -> int:
    """The side of the square grid formed by the ``tokens - 1`` tokens after the class token."""
    side = math.isqrt(max(tokens - 1, 0))
    if tokens - 1 < 1 or side * side != tokens - 1:
        reject(
            layer,
            "image tokens (tokens - 1)",
            tokens - 1,
            "must be a positive square number: token 0 is the class token and the others form a square grid",
        )
    return side


def _check_odd_kernel(layer: str, param: str, value, kernel_size: int) -> None:
    if kernel_size % 2 == 0:
        reject(layer, param, value, f"must hold odd kernel sizes: {kernel_size} is even, and its kernel_size // 2 zeros on each side would grow the grid")


def depthwise_kernel(name: str, kernel_size: int, channels: int) -> Weight:
    """A ``(k, k, channels, 1)`` depthwise kernel, drawn at std ``1 / k``: each output sums the
    ``k * k`` taps of one channel, so that is its fan-in."""
    return Weight(name, (kernel_size, kernel_size, channels, 1), std=1.0 / kernel_size)


@dataclass(frozen=True)
class IntegerList(Domain):
    """A non-empty list of integers, each ``>= minimum`` (and an odd kernel size with
    ``odd=True``); a tuple is accepted and normalised to a list, the type of the 2021 defaults."""

    minimum: int = 1
    odd: bool = False
    sample_values: tuple[int, ...] = (1, 2)

    def check(self, layer, param, value):
        if not isinstance(value, (list, tuple)) or not value:
            reject(layer, param, value, f"must be a non-empty list of {self._elements()}")
        for element in value:
            if isinstance(element, (bool, np.bool_)) or not isinstance(element, numbers.Integral):
                reject(layer, param, value, f"must be a non-empty list of {self._elements()}: {element!r} is not an integer")
            if element < self.minimum:
                reject(layer, param, value, f"must be a non-empty list of {self._elements()}: {element} is below {self.minimum}")
            if self.odd:
                _check_odd_kernel(layer, param, value, int(element))
        return [int(element) for element in value]

    def _elements(self) -> str:
        return f"{'odd ' if self.odd else ''}integers >= {self.minimum}"

    def describe(self):
        return f"non-empty list of {self._elements()}"

    def sample(self, draw, label):
        count = draw.integer(f"{label} length", 1, 3)
        return [draw.choice(f"{label}[{index}]", self.sample_values) for index in range(count)]


# --------------------------------------------------------------------------------------------
# ConvPositionalEncoding


def conv_positional_encoding(inputs: np.ndarray, *, weights, kernel_size=3) -> np.ndarray:
    """Convolutional position encoding of CoaT: a depthwise convolution over the token grid,
    added to the tokens; the class token passes through unchanged.

    ``inputs`` is ``[B, N, C]``. Token 0 is the class token and is returned as it is. Tokens
    ``1 .. N-1`` form a ``side x side`` grid, ``side = sqrt(N - 1)``, row-major: token
    ``1 + y * side + x`` is pixel ``(y, x)``; the grid is a ``[B, side, side, C]`` map ``g``.
    With ``p = kernel_size // 2`` zeros padded on every side of the grid (outside pixels read 0),
    output pixel ``(y, x)`` of channel ``c`` is

        ``g[y, x, c] + bias[c] + sum_{i, j < kernel_size} depthwise_kernel[i, j, c, 0] * g[y + i - p, x + j - p, c]``

    and is written back to token ``1 + y * side + x``. Output ``[B, N, C]``.
    """
    batch, tokens, channels = inputs.shape
    side = math.isqrt(tokens - 1)
    grid = inputs[:, 1:].reshape(batch, side, side, channels)
    convolved = depthwise_conv2d(pad(grid, symmetric_padding(kernel_size)), weights["depthwise_kernel"], bias=weights["bias"])
    out = np.empty(inputs.shape)
    out[:, :1] = inputs[:, :1]
    np.add(inputs[:, 1:], convolved.reshape(batch, side * side, channels), out=out[:, 1:])
    return out


def _cpe_weights(config, input_shape):
    channels = input_shape[-1]
    return [depthwise_kernel("depthwise_kernel", config["kernel_size"], channels), vector("bias", channels)]


def _cpe_check(config, input_shape):
    grid_side("ConvPositionalEncoding", input_shape[1])


def _cpe_check_config(config):
    _check_odd_kernel("ConvPositionalEncoding", "kernel_size", config["kernel_size"], config["kernel_size"])


def _cpe_sample_config(draw):
    return {"kernel_size": 2 * draw.integer("kernel_size // 2", 0, 2) + 1}


def _token_grid_shape(draw):
    """``[B, side * side + 1, C]``: a class token and a square grid of side 1 to 4."""
    side = draw.integer("grid side", 1, 4)
    tokens = side * side + 1
    # As many channels as tokens is the shape on which swapping the two axes goes unnoticed.
    channels = tokens if draw.choice("channels equal the token count", (False, True)) else _sampling.channels(draw)
    return (_sampling.batch(draw), tokens, channels)


CONV_POSITIONAL_ENCODING = LayerSpec(
    name="ConvPositionalEncoding",
    family="coat",
    kind="layer",
    summary="Depthwise convolution over the square token grid added to the tokens; the class token passes through.",
    params=(
        Param(
            "kernel_size",
            3,
            Integer(minimum=1, sample_range=(1, 5)),
            "Side of the square depthwise kernel; odd (the grid is padded with kernel_size // 2 zeros on each side).",
        ),
    ),
    inputs=(Input("inputs", "tokens", "Token 0 is the class token; tokens 1 .. N-1 are a square grid, row-major."),),
    output_kind="tokens",
    forward=conv_positional_encoding,
    weights=_cpe_weights,
    output_shape=lambda config, input_shape: input_shape,
    check=_cpe_check,
    check_config=_cpe_check_config,
    sample_config=_cpe_sample_config,
    sample_input_shapes=lambda config, draw: (_token_grid_shape(draw),),
    examples=(
        Example(
            "documented",
            {"kernel_size": 3},
            ((1, 197, 256),),
            source="2021 code (07209e2)",
            documented_output_shape=(1, 197, 256),
            documented_weights={"depthwise_kernel": (3, 3, 256, 1), "bias": (256,)},
        ),
        Example("small_kernel_5_larger_than_grid", {"kernel_size": 5}, ((2, 10, 3),), source="spec"),
        Example("small_kernel_1", {"kernel_size": 1}, ((1, 5, 4),), source="spec"),
        Example("small_grid_1x1", {"kernel_size": 3}, ((3, 2, 2),), source="spec"),
    ),
    rejections=(
        Rejection({}, ((1, 11, 4),), "image tokens (tokens - 1) 10 must be a positive square number"),
        Rejection({}, ((2, 1, 4),), "image tokens (tokens - 1) 0 must be a positive square number"),
        Rejection({"kernel_size": 4}, ((1, 10, 4),), "kernel_size 4 must hold odd kernel sizes: 4 is even"),
        Rejection({"kernel_size": 0}, ((1, 10, 4),), "kernel_size 0 must be >= 1"),
        Rejection({"kernel_size": (3, 3)}, ((1, 10, 4),), "kernel_size (3, 3) must be an integer"),
        Rejection({}, ((1, 3, 3, 4),), "inputs shape (1, 3, 3, 4) must have rank 3"),
    ),
    notes=(
        "The 2021 code takes the grid side as `int(sqrt(N - 1))`: a token count that is not one more than a "
        "square is silently truncated there and rejected here, naming N - 1.",
        "Even kernels are rejected: the 2021 code pads kernel_size // 2 zeros on each side, so an even kernel "
        "would grow the grid by one and break the residual sum.",
        "The 2021 layer builds a DepthwiseConv2D inside its own build(), so Keras 2 named its variables "
        "`<layer>/depthwise_kernel` and `<layer>/bias` with no sublayer level; those are the canonical names.",
        "Tests draw the depthwise kernel at std 1 / kernel_size: each output sums kernel_size ** 2 taps of one "
        "channel, so that is its fan-in (a dense kernel's 1 / sqrt(kernel_size ** 2 * C) would be too small).",
    ),
)


# --------------------------------------------------------------------------------------------
# ConvRelativePositionalEncoding

CRPE = "ConvRelativePositionalEncoding"


def conv_relative_positional_encoding(query: np.ndarray, value: np.ndarray, *, weights, head_splits=(2, 3, 3), head_kernel_size=(3, 5, 7)) -> np.ndarray:
    """Convolutional relative position encoding of CoaT: the query times a per-head-group
    depthwise convolution of the value over the token grid; the class-token row is zero.

    ``query`` and ``value`` are ``[B, heads, N, d]``. Tokens ``1 .. N-1`` form a
    ``side x side`` grid, ``side = sqrt(N - 1)``, row-major (token ``1 + y * side + x`` is pixel
    ``(y, x)``). The value's grid tokens become one ``[B, side, side, heads * d]`` map whose
    channel ``h * d + j`` is head ``h``, component ``j`` (the 2021 code transposes to
    ``[B, N-1, heads, d]`` and reshapes).

    The heads are cut into consecutive groups of ``head_splits[s]`` heads: group ``s`` starts at
    head ``start_s = head_splits[0] + ... + head_splits[s-1]`` and owns the contiguous channels
    ``start_s * d .. (start_s + head_splits[s]) * d - 1``. Group ``s`` is convolved depthwise with
    ``depth_conv_{s+1}/depthwise_kernel`` ``(k_s, k_s, head_splits[s] * d, 1)``,
    ``k_s = head_kernel_size[s]``, after padding ``k_s // 2`` zeros on every side of the grid, and
    ``depth_conv_{s+1}/bias`` is added; the group's local channel ``(h - start_s) * d + j`` is
    head ``h``, component ``j``. With ``p = k_s // 2``, for a head ``h`` of group ``s``:

        ``conv[h, (y, x), j] = bias[(h - start_s) * d + j] + sum_{a, b < k_s} depthwise_kernel[a, b, (h - start_s) * d + j, 0] * value[h, 1 + (y + a - p) * side + (x + b - p), j]``

    (pixels outside the grid read 0). The output is ``[B, heads, N, d]``: row 0 (the class
    token) is zero, and row ``1 + y * side + x`` is ``query[h, 1 + y * side + x, j] * conv[h, (y, x), j]``.
    """
    batch, heads, tokens, depth = query.shape
    side = math.isqrt(tokens - 1)
    grid = value[:, :, 1:].transpose(0, 2, 1, 3).reshape(batch, side, side, heads * depth)
    convolved, start = [], 0
    for index, (split, kernel_size) in enumerate(zip(head_splits, head_kernel_size), start=1):
        group = grid[..., start * depth : (start + split) * depth]
        padded = pad(group, symmetric_padding(kernel_size))
        convolved.append(depthwise_conv2d(padded, weights[f"depth_conv_{index}/depthwise_kernel"], bias=weights[f"depth_conv_{index}/bias"]))
        start += split
    conv = np.concatenate(convolved, axis=-1).reshape(batch, side * side, heads, depth).transpose(0, 2, 1, 3)
    out = np.empty(query.shape)
    out[:, :, 0] = 0.0
    np.multiply(query[:, :, 1:], conv, out=out[:, :, 1:])
    return out


def _crpe_weights(config, query_shape, value_shape):
    depth = query_shape[-1]
    weights = []
    for index, (split, kernel_size) in enumerate(zip(config["head_splits"], config["head_kernel_size"]), start=1):
        weights.append(depthwise_kernel(f"depth_conv_{index}/depthwise_kernel", kernel_size, split * depth))
        weights.append(vector(f"depth_conv_{index}/bias", split * depth))
    return weights


def _crpe_check_config(config):
    splits, kernels = config["head_splits"], config["head_kernel_size"]
    if len(kernels) != len(splits):
        reject(
            CRPE,
            "head_kernel_size",
            kernels,
            f"must have one kernel size per head split: {len(kernels)} kernel sizes for {len(splits)} splits "
            "(the 2021 zip silently dropped the extras)",
        )


def _crpe_check(config, query_shape, value_shape):
    if value_shape != query_shape:
        reject(CRPE, "value shape", value_shape, f"must equal the query shape {query_shape}")
    grid_side(CRPE, query_shape[2])
    heads = query_shape[1]
    if sum(config["head_splits"]) != heads:
        reject(CRPE, "head_splits", config["head_splits"], f"must sum to the number of heads, {heads} (axis 1 of the query {query_shape})")


def _crpe_sample_config(draw):
    splits = draw.integer("number of head splits", 1, 3)
    return {
        "head_splits": [draw.integer(f"heads in split {index + 1}", 1, 2) for index in range(splits)],
        "head_kernel_size": [2 * draw.integer(f"kernel_size // 2 of split {index + 1}", 0, 2) + 1 for index in range(splits)],
    }


def _crpe_sample_input_shapes(config, draw):
    side = draw.integer("grid side", 1, 4)
    shape = (_sampling.batch(draw), sum(config["head_splits"]), side * side + 1, draw.integer("channels per head", 1, 4))
    return shape, shape


CONV_RELATIVE_POSITIONAL_ENCODING = LayerSpec(
    name=CRPE,
    family="coat",
    kind="layer",
    summary="Query times a depthwise convolution of the value over the token grid, one kernel size per group of heads; zero for the class token.",
    params=(
        Param(
            "head_splits",
            [2, 3, 3],
            IntegerList(minimum=1),
            "Heads per group, in head order; must sum to the number of heads.",
        ),
        Param(
            "head_kernel_size",
            [3, 5, 7],
            IntegerList(minimum=1, odd=True, sample_values=(1, 3, 5)),
            "Odd depthwise kernel size of each group; one per entry of head_splits.",
        ),
    ),
    inputs=(
        Input("query", "per_head", "Token 0 is the class token; tokens 1 .. N-1 are a square grid, row-major."),
        Input("value", "per_head", "Same shape as the query."),
    ),
    output_kind="per_head",
    forward=conv_relative_positional_encoding,
    weights=_crpe_weights,
    output_shape=lambda config, query_shape, value_shape: query_shape,
    check=_crpe_check,
    check_config=_crpe_check_config,
    sample_config=_crpe_sample_config,
    sample_input_shapes=_crpe_sample_input_shapes,
    examples=(
        Example(
            "documented",
            {"head_splits": [2, 3, 3], "head_kernel_size": [3, 5, 7]},
            ((1, 8, 197, 6), (1, 8, 197, 6)),
            source="2021 code (07209e2)",
            documented_output_shape=(1, 8, 197, 6),
            documented_weights={
                "depth_conv_1/depthwise_kernel": (3, 3, 12, 1),
                "depth_conv_1/bias": (12,),
                "depth_conv_2/depthwise_kernel": (5, 5, 18, 1),
                "depth_conv_2/bias": (18,),
                "depth_conv_3/depthwise_kernel": (7, 7, 18, 1),
                "depth_conv_3/bias": (18,),
            },
        ),
        Example("small_three_splits", {"head_splits": [1, 2, 1], "head_kernel_size": [3, 1, 5]}, ((2, 4, 10, 3), (2, 4, 10, 3)), source="spec"),
        Example("small_one_split", {"head_splits": [2], "head_kernel_size": [3]}, ((1, 2, 5, 2), (1, 2, 5, 2)), source="spec"),
    ),
    rejections=(
        Rejection(
            {"head_splits": [2, 3], "head_kernel_size": [3, 5, 7]},
            ((1, 5, 10, 2), (1, 5, 10, 2)),
            "head_kernel_size [3, 5, 7] must have one kernel size per head split: 3 kernel sizes for 2 splits",
        ),
        Rejection({"head_splits": [2, 3, 3], "head_kernel_size": [3, 5]}, ((1, 8, 10, 2), (1, 8, 10, 2)), "2 kernel sizes for 3 splits"),
        Rejection({"head_kernel_size": [3, 4, 7]}, ((1, 8, 10, 2), (1, 8, 10, 2)), "head_kernel_size [3, 4, 7] must hold odd kernel sizes: 4 is even"),
        Rejection({"head_splits": [2, 0, 3]}, ((1, 5, 10, 2), (1, 5, 10, 2)), "head_splits [2, 0, 3] must be a non-empty list of integers >= 1: 0 is below 1"),
        Rejection({"head_splits": [], "head_kernel_size": []}, ((1, 5, 10, 2), (1, 5, 10, 2)), "head_splits [] must be a non-empty list"),
        Rejection({"head_splits": 8, "head_kernel_size": 3}, ((1, 8, 10, 2), (1, 8, 10, 2)), "head_splits 8 must be a non-empty list"),
        Rejection({}, ((1, 4, 10, 2), (1, 4, 10, 2)), "head_splits [2, 3, 3] must sum to the number of heads, 4"),
        Rejection({}, ((1, 8, 10, 2), (1, 8, 10, 3)), "value shape (1, 8, 10, 3) must equal the query shape (1, 8, 10, 2)"),
        Rejection({}, ((1, 8, 12, 2), (1, 8, 12, 2)), "image tokens (tokens - 1) 11 must be a positive square number"),
        Rejection({}, ((1, 8, 10), (1, 8, 10)), "query shape (1, 8, 10) must have rank 4"),
    ),
    notes=(
        "The 2021 code zips head_splits with head_kernel_size, silently dropping extra entries of the longer "
        "one; the spec rejects lists of different lengths.",
        "The 2021 layer's call is `call(query, value)`: the query and the value are two positional inputs of "
        "the same shape. Its `build` receives only the query's shape.",
        "Each group's DepthwiseConv2D is built under the name scope `depth_conv_<s>` (1-based) inside the layer, "
        "so its canonical weights are `depth_conv_<s>/depthwise_kernel` and `depth_conv_<s>/bias`.",
        "Non-square token grids and even kernel sizes are rejected, and depthwise kernels drawn at std "
        "1 / kernel_size, as for ConvPositionalEncoding.",
    ),
)


# --------------------------------------------------------------------------------------------
# layer_norm


def layer_norm(inputs: np.ndarray, *, weights) -> np.ndarray:
    """LayerNormalization over the channel axis (the last), epsilon ``1e-6``.

    For each position, over the ``C`` channels of the last axis: ``mean = sum(x) / C``,
    ``variance = sum((x - mean) ** 2) / C`` (biased), and
    ``out = (x - mean) / sqrt(variance + 1e-6) * ln/gamma + ln/beta``. Any rank from 2 to 4:
    ``[B, C]``, tokens ``[B, N, C]``, feature maps ``[B, H, W, C]``.
    """
    return normalize_last_axis(inputs, weights["ln/gamma"], weights["ln/beta"], epsilon=LAYER_NORM_EPSILON)


def _layer_norm_input_shape(draw):
    channels = draw.integer("channels", 1, _sampling.MAX_CHANNELS)
    rank = draw.choice("rank", (4, 3, 2))
    if rank == 4:
        return (_sampling.batch(draw), draw.integer("height", 1, _sampling.MAX_SIDE), draw.integer("width", 1, _sampling.MAX_SIDE), channels)
    if rank == 3:
        return (_sampling.batch(draw), draw.integer("tokens", 1, 2 * _sampling.MAX_SIDE), channels)
    return (_sampling.batch(draw), channels)


LAYER_NORM = LayerSpec(
    name="layer_norm",
    family="coat",
    kind="block",
    summary="LayerNormalization over the channel (last) axis with epsilon 1e-6.",
    params=(),
    inputs=(Input("inputs", "channels_last", "Normalised over the channel axis: the last one of [B, C], [B, N, C] and [B, H, W, C]."),),
    output_kind="channels_last",
    forward=layer_norm,
    weights=lambda config, input_shape: [
        vector("ln/gamma", input_shape[-1], initial=1.0),
        vector("ln/beta", input_shape[-1], initial=0.0),
    ],
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_layer_norm_input_shape(draw),),
    examples=(
        Example(
            "documented",
            {},
            ((2, 197, 256),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 197, 256),
            documented_weights={"ln/gamma": (256,), "ln/beta": (256,)},
            fixture=False,
        ),
        Example("documented_config", {}, ((1, 5, 256),), source="2021 code (07209e2)", documented_weights={"ln/gamma": (256,), "ln/beta": (256,)}),
        Example("small_tokens", {}, ((2, 5, 6),), source="spec"),
        Example("small_feature_map", {}, ((2, 3, 4, 5),), source="spec"),
        Example("small_vectors", {}, ((3, 7),), source="spec"),
    ),
    rejections=(
        Rejection({"epsilon": 1e-5}, ((2, 5, 6),), "unknown config parameter 'epsilon'"),
        Rejection({}, ((6,),), "inputs shape (6,) must have rank 2, 3 or 4"),
        Rejection({}, ((1, 2, 3, 4, 5),), "inputs shape (1, 2, 3, 4, 5) must have rank 2, 3 or 4"),
    ),
    notes=(
        "Epsilon is 1e-6, the value of the 2021 constant; the 2021 docstring says 1e-5. In float64 the two "
        "differ visibly wherever the variance is small: at inputs of scale 1e-3 the outputs differ by a factor of "
        "about 2.3, at scale 1 by about 4.5e-6 relative.",
        "The 2021 signature is `layer_norm(inputs, name=None)`: no epsilon or axis argument. The Keras layer is "
        "named `name + \"ln\"` (Keras picks a name when `name` is None or empty), so the weights are `ln/gamma` "
        "(initially 1) and `ln/beta` (initially 0).",
        "The 2021 code normalises axis 1 instead when Keras' image data format is channels_first, token "
        "sequences included; this spec is channels-last throughout and always normalises the last axis. A "
        "channels-first implementation normalises axis 1 of the [B, C, H, W] maps it receives and the last "
        "axis of [B, C] and [B, N, C].",
        "With one channel the output is exactly beta. An implementation must centre first, "
        "`(x - mean) / sqrt(var + 1e-6)`: Keras 3's LayerNormalization computes `x * inv + (beta - mean * inv)` "
        "with `inv = gamma / sqrt(var + 1e-6)`, where two terms of about 1000 * |x * gamma| cancel and leave their "
        "float32 rounding (8% of standard-normal rows miss 256 eps, 90% at scale 100), so the Keras "
        "implementation uses a mean-first LayerNormalization. With two channels off the float16 grid a row's "
        "mean over its spread is Cauchy-distributed and any float32 implementation can miss 256 eps on rare "
        "rows; drawn inputs lie on the float16 grid, where the mean of two values is exact in float32.",
    ),
)

SPECS = (CONV_POSITIONAL_ENCODING, CONV_RELATIVE_POSITIONAL_ENCODING, LAYER_NORM)
