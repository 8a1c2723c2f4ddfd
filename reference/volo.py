"""Layers from VOLO (volo): outlook_attention, outlook_attention_simple, BiasLayer,
PositionalEmbedding, ClassToken."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reference import _sampling
from reference._conv import pad
from reference._errors import reject
from reference._ops import softmax
from reference._spec import (
    REQUIRED,
    Domain,
    Example,
    Input,
    Integer,
    LayerSpec,
    Param,
    Real,
    Rejection,
    Weight,
    kernel,
    no_extra_check,
    vector,
)

# --------------------------------------------------------------------------------------------
# Window geometry shared by the two outlook layers


def ceil_div(size: int, step: int) -> int:
    return -(-size // step)


def padding_pixels(kernel_size: int, padding: int) -> int:
    """Zeros on every side before unfolding: the 2021 ``padding`` is a flag, 1 means ``k // 2``."""
    return kernel_size // 2 if padding == 1 else 0


def pooled_positions(size: int, strides: int) -> int:
    """Positions of the ceil-mode average pool along one axis: ``ceil(size / strides)``."""
    return ceil_div(size, strides)


def unfolded_windows(size: int, kernel_size: int, padding: int, strides: int) -> int:
    """Windows of ``kernel_size`` at ``strides`` along one axis of the padded map (0 if none fit)."""
    padded = size + 2 * padding_pixels(kernel_size, padding)
    return (padded - kernel_size) // strides + 1 if padded >= kernel_size else 0


def window_index(windows: int, kernel_size: int, strides: int) -> np.ndarray:
    """``[windows, kernel_size]``: entry ``[m, i] = m * strides + i``, the padded row (or column)
    that offset ``i`` of window ``m`` covers."""
    return strides * np.arange(windows)[:, None] + np.arange(kernel_size)[None, :]


def unfold(x: np.ndarray, kernel_size: int, strides: int) -> np.ndarray:
    """``[B, Hp, Wp, C]`` (already padded) -> ``[B, P, Q, k, k, C]``, the VALID windows:
    ``out[:, m, n, i, j] = x[:, m*strides + i, n*strides + j]``."""
    rows = window_index((x.shape[1] - kernel_size) // strides + 1, kernel_size, strides)
    cols = window_index((x.shape[2] - kernel_size) // strides + 1, kernel_size, strides)
    return x[:, rows[:, None, :, None], cols[None, :, None, :]]


def fold(windows: np.ndarray, padded_size: tuple[int, int], strides: int) -> np.ndarray:
    """The transpose of :func:`unfold`: ``[B, P, Q, k, k, C]`` -> ``[B, Hp, Wp, C]``, every
    window offset added onto the pixel :func:`unfold` read it from (overlaps summed)."""
    batch, rows_count, cols_count, kernel_size, _, channels = windows.shape
    out = np.zeros((batch, *padded_size, channels))
    # Offset (i, j) of every window lands on the pixels (m*strides + i, n*strides + j): one
    # strided slice per offset, added offset after offset (np.add.at is an order slower).
    for i in range(kernel_size):
        for j in range(kernel_size):
            out[:, i : i + strides * (rows_count - 1) + 1 : strides, j : j + strides * (cols_count - 1) + 1 : strides] += windows[:, :, :, i, j]
    return out


def ceil_average_pool(x: np.ndarray, pool: int) -> np.ndarray:
    """``pool x pool`` average at stride ``pool``, ceil mode: the last row and column of windows
    may stick out of the map and average only the pixels inside it."""
    _, height, width, _ = x.shape
    row_starts, col_starts = np.arange(0, height, pool), np.arange(0, width, pool)
    # Sums over each run of rows, then of columns: no padding, so a pool far larger than the
    # map costs no more than the map.
    sums = np.add.reduceat(np.add.reduceat(x, row_starts, axis=1), col_starts, axis=2)
    counts = np.outer(np.minimum(pool, height - row_starts), np.minimum(pool, width - col_starts))
    return sums / counts[None, :, :, None]


def attend_windows(windows: np.ndarray, logits: np.ndarray, num_head: int) -> np.ndarray:
    """Per window and head, ``softmax(logits) @ window``.

    ``windows [B, P, Q, k, k, E]``; ``logits [B, P, Q, num_head * k^4]`` with channel
    ``h * k^4 + i * k^2 + j``; returns ``[B, P, Q, k, k, E]``.
    """
    batch, rows, cols, k, _, embed = windows.shape
    depth = embed // num_head
    attention = softmax(logits.reshape(batch, rows, cols, num_head, k * k, k * k), axis=-1)
    values = windows.reshape(batch, rows, cols, k * k, num_head, depth).swapaxes(3, 4)  # [..., heads, j, d], a view
    mixed = np.matmul(attention, values)  # [..., heads, i, d]
    return mixed.swapaxes(3, 4).reshape(batch, rows, cols, k, k, embed)


def _projected_logits(pooled: np.ndarray, weights, embed_dim: int, num_head: int) -> np.ndarray:
    logits = pooled @ weights["attn/kernel"]
    logits += weights["attn/bias"]
    logits /= math.sqrt(embed_dim // num_head)
    return logits


# --------------------------------------------------------------------------------------------
# outlook_attention


def outlook_attention(
    inputs: np.ndarray,
    *,
    weights,
    embed_dim,
    num_head,
    kernel_size=3,
    padding=1,
    strides=2,
    attn_dropout=0,
    output_dropout=0,
) -> np.ndarray:
    """VOLO's outlook attention: unfold the value map into k x k windows, mix each window with a
    ``k^2 x k^2`` attention predicted from the pooled input at its position, fold back summing
    overlaps.

    Input ``x [B, H, W, C]``; ``k = kernel_size``, ``s = strides``, ``n = num_head``,
    ``E = embed_dim``, ``d = E // n``; ``p = k // 2`` if ``padding == 1`` else ``p = 0``
    (``padding`` is a flag, not a pixel count).

    1. Value: ``v = x @ v/kernel``, ``[B, H, W, E]`` (no bias).
    2. Pooling, ceil mode: ``P = ceil(H / s)`` rows and ``Q = ceil(W / s)`` columns; position
       ``(m, q)`` is the mean of the pixels ``x[m*s + a, q*s + b]``, ``0 <= a, b < s``, that lie
       inside the map (windows cut by the bottom or right border divide by the pixels they
       hold, not by ``s*s``).
    3. Logits: ``(pooled @ attn/kernel + attn/bias) / sqrt(d)``, ``[B, P, Q, n * k^4]``; channel
       ``h * k^4 + i * k^2 + j`` is head ``h``'s logit from window offset ``j`` (the input) to
       window offset ``i`` (the output), offsets numbered row-major, ``i = ki * k + kj``.
       Softmax over ``j``, the ``k^2`` inputs.
    4. Unfold: ``v`` is zero-padded by ``p`` on every side; window ``(m, q)`` offset
       ``(ki, kj)`` reads the padded pixel ``(m*s + ki, q*s + kj)``, that is the map's pixel
       ``(m*s + ki - p, q*s + kj - p)``. The windows per axis, ``(H + 2p - k) // s + 1``, must
       equal ``P`` (and ``Q`` for the width); configurations where they differ are rejected.
    5. Attention per window and head: ``out[i, h*d + e] = sum_j a[h, i, j] * window[j, h*d + e]``;
       head ``h`` owns the contiguous channels ``h*d .. h*d + d - 1``.
    6. Fold: output pixel ``(y, z)`` is the sum of ``out`` over every window ``(m, q)`` and
       offset ``(ki, kj)`` with ``m*s + ki - p = y`` and ``q*s + kj - p = z``: overlaps add, a
       pixel no window covers gets zero (possible only when ``s > k - p``), offsets on the
       padding are dropped.
    7. Output: ``folded @ out/kernel + out/bias``, ``[B, H, W, E]``.

    ``attn_dropout`` and ``output_dropout`` are inactive at inference.
    """
    _, height, width, _ = inputs.shape
    border = padding_pixels(kernel_size, padding)
    padded_size = (height + 2 * border, width + 2 * border)
    value = pad(inputs @ weights["v/kernel"], ((border, border), (border, border)))
    logits = _projected_logits(ceil_average_pool(inputs, strides), weights, embed_dim, num_head)
    mixed = attend_windows(unfold(value, kernel_size, strides), logits, num_head)
    folded = fold(mixed, padded_size, strides)[:, border : border + height, border : border + width]
    out = folded @ weights["out/kernel"]
    out += weights["out/bias"]
    return out


def _outlook_weights(config, input_shape):
    channels, embed, k = input_shape[-1], config["embed_dim"], config["kernel_size"]
    attn_channels = k**4 * config["num_head"]
    return [
        kernel("v/kernel", (channels, embed)),
        kernel("attn/kernel", (channels, attn_channels)),
        vector("attn/bias", attn_channels),
        kernel("out/kernel", (embed, embed)),
        vector("out/bias", embed),
    ]


def _check_heads(layer: str, config) -> None:
    embed, heads = config["embed_dim"], config["num_head"]
    if embed < heads:
        swap = "; did you mean embed_dim={}, num_head={}?".format(heads, embed) if heads % embed == 0 else ""
        reject(layer, "embed_dim", embed, f"is smaller than num_head {heads} (0 channels per head){swap}")
    if embed % heads:
        reject(layer, "embed_dim", embed, f"is not a multiple of num_head {heads}")


def _check_outlook_config(config):
    _check_heads("outlook_attention", config)
    k, s = config["kernel_size"], config["strides"]
    if config["padding"] == 0 and k > s:
        reject(
            "outlook_attention",
            "kernel_size",
            k,
            f"is larger than strides {s} with padding 0: an unpadded map has fewer windows than "
            "pooled positions (ceil(size / strides)) at every size",
        )
    if config["padding"] == 1 and k % 2 == 0 and s == 1:
        reject(
            "outlook_attention",
            "kernel_size",
            k,
            "is even with padding 1 and strides 1: the padded map has one window more than "
            "pooled positions at every size",
        )


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _check_outlook_shape(config, input_shape):
    k, padding, s = config["kernel_size"], config["padding"], config["strides"]
    border = padding_pixels(k, padding)
    for axis, size in (("height", input_shape[1]), ("width", input_shape[2])):
        pooled, windows = pooled_positions(size, s), unfolded_windows(size, k, padding, s)
        if pooled != windows:
            reject(
                "outlook_attention",
                axis,
                size,
                f"gives {_counted(pooled, 'pooled position')}, ceil({size} / strides {s}), but {_counted(windows, 'window')} of "
                f"kernel_size {k} on the map padded by {border} on each side, ({size} + {2 * border} - {k}) // {s} + 1; "
                "the two counts must be equal",
            )


@dataclass(frozen=True)
class PaddingFlag(Domain):
    """The 2021 ``padding`` of outlook_attention: 1 pads ``kernel_size // 2`` pixels on every
    side, 0 none."""

    def check(self, layer, param, value):
        value = Integer().check(layer, param, value)
        if value not in (0, 1):
            reject(
                layer,
                param,
                value,
                "must be 0 or 1: it is a flag (1 pads kernel_size // 2 pixels on every side), not a pixel count",
            )
        return value

    def describe(self):
        return "0 or 1 (a flag: 1 pads kernel_size // 2 pixels on every side)"

    def sample(self, draw, label):
        return draw.choice(label, (0, 1))


MAX_OUTLOOK_SIDE = 8
"""Drawn maps go up to about 8 x 8 so that kernels up to 5 at strides up to 3 still give several
windows per axis."""


def _sample_heads(draw) -> dict:
    num_head = draw.integer("num_head", 1, 3)
    return {"num_head": num_head, "embed_dim": num_head * draw.integer("channels per head", 1, 4)}


def _sample_outlook_config(draw):
    # Padding first, then strides, then a kernel size that some map size fits (see the rule
    # in _check_outlook_config): odd with padding 1 at strides 1, at most strides with padding 0.
    padding = draw.choice("padding", (1, 0))
    strides = draw.integer("strides", 1, 3)
    if padding == 0:
        kernel_size = draw.integer("kernel_size", 1, strides)
    elif strides == 1:
        kernel_size = 2 * draw.integer("kernel_size // 2", 0, 2) + 1
    else:
        kernel_size = draw.integer("kernel_size", 1, 5)
    return {
        **_sample_heads(draw),
        "kernel_size": kernel_size,
        "padding": padding,
        "strides": strides,
        "attn_dropout": draw.real("attn_dropout", 0.0, 0.9),
        "output_dropout": draw.real("output_dropout", 0.0, 0.9),
    }


def fitting_sizes(windows: int, kernel_size: int, padding: int, strides: int) -> tuple[int, int]:
    """The smallest and largest size with ``windows`` pooled positions and as many unfolded
    windows. The sizes between them all fit: ``ceil(size / strides) == windows`` holds on
    ``(windows - 1) * strides + 1 .. windows * strides``, and of those a configuration the
    config rule admits loses at most the first ``kernel_size - 1`` (padding 0) or the last
    (padding 1, even kernel)."""
    candidates = range((windows - 1) * strides + 1, windows * strides + 1)
    fits = [n for n in candidates if pooled_positions(n, strides) == unfolded_windows(n, kernel_size, padding, strides)]
    return fits[0], fits[-1]


def _sample_outlook_shapes(config, draw):
    geometry = (config["kernel_size"], config["padding"], config["strides"])
    most_windows = ceil_div(MAX_OUTLOOK_SIDE, config["strides"])
    height = draw.integer("height", *fitting_sizes(draw.integer("rows of windows", 1, most_windows), *geometry))
    width = draw.integer("width", *fitting_sizes(draw.integer("columns of windows", 1, most_windows), *geometry))
    return ((_sampling.batch(draw), height, width, _sampling.channels(draw)),)


_README_OUTLOOK_WEIGHTS = {
    "v/kernel": (192, 192),
    "attn/kernel": (192, 324),
    "attn/bias": (324,),
    "out/kernel": (192, 192),
    "out/bias": (192,),
}

_EMBED_DIM = Param("embed_dim", REQUIRED, Integer(minimum=1, sample_range=(1, 12)), "Channels of the value projection and of the output; a multiple of `num_head`.")
_NUM_HEAD_DOC = "Attention heads; each owns `embed_dim // num_head` contiguous channels."
_ATTN_DROPOUT = Param("attn_dropout", 0, Real(0.0, 1.0, sample_range=(0.0, 0.9)), "Dropout rate on the attention weights during training; inactive at inference.")


OUTLOOK_ATTENTION = LayerSpec(
    name="outlook_attention",
    family="volo",
    kind="block",
    summary="VOLO's outlook attention: per-window attention predicted from the pooled input, unfolded and folded back (overlaps summed).",
    params=(
        _EMBED_DIM,
        Param("num_head", REQUIRED, Integer(minimum=1, sample_range=(1, 3)), _NUM_HEAD_DOC),
        Param("kernel_size", 3, Integer(minimum=1, sample_range=(1, 5)), "Side of the square windows."),
        Param("padding", 1, PaddingFlag(), "1: zero-pad the value map by `kernel_size // 2` on every side before unfolding; 0: no padding."),
        Param("strides", 2, Integer(minimum=1, sample_range=(1, 3)), "Step between windows, and the size and step of the average pool."),
        _ATTN_DROPOUT,
        Param("output_dropout", 0, Real(0.0, 1.0, sample_range=(0.0, 0.9)), "Dropout rate on the output during training; inactive at inference."),
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=outlook_attention,
    weights=_outlook_weights,
    output_shape=lambda config, shape: (*shape[:3], config["embed_dim"]),
    check=_check_outlook_shape,
    check_config=_check_outlook_config,
    sample_config=_sample_outlook_config,
    sample_input_shapes=_sample_outlook_shapes,
    examples=(
        Example(
            "readme",
            {"embed_dim": 192, "num_head": 4},
            ((1, 28, 28, 192),),
            source="README usage with embed_dim and num_head as intended; the README's positional 4, 192 swaps them",
            documented_output_shape=(1, 28, 28, 192),
            documented_weights=_README_OUTLOOK_WEIGHTS,
            fixture=False,
        ),
        Example(
            "readme_config",
            {"embed_dim": 192, "num_head": 4},
            ((1, 4, 4, 192),),
            source="README usage on the smallest map whose windows overlap",
            documented_output_shape=(1, 4, 4, 192),
            documented_weights=_README_OUTLOOK_WEIGHTS,
        ),
        Example("small_odd_sizes", {"embed_dim": 6, "num_head": 2}, ((2, 5, 7, 4),), source="spec"),
        Example("small_even_kernel_stride_3", {"embed_dim": 6, "num_head": 3, "kernel_size": 4, "strides": 3}, ((1, 5, 4, 3),), source="spec"),
        Example(
            "small_unpadded_gaps",
            {"embed_dim": 4, "num_head": 1, "kernel_size": 2, "padding": 0, "strides": 3},
            ((2, 6, 3, 5),),
            source="spec",
        ),
    ),
    rejections=(
        Rejection(
            {"embed_dim": 4, "num_head": 192},
            ((1, 28, 28, 192),),
            "embed_dim 4 is smaller than num_head 192 (0 channels per head); did you mean embed_dim=192, num_head=4?",
        ),
        Rejection({"embed_dim": 4, "num_head": 6}, ((1, 4, 4, 4),), "embed_dim 4 is smaller than num_head 6 (0 channels per head)"),
        Rejection({"embed_dim": 10, "num_head": 4}, ((1, 4, 4, 4),), "embed_dim 10 is not a multiple of num_head 4"),
        Rejection({"num_head": 4}, ((1, 4, 4, 4),), "config parameter 'embed_dim' is required"),
        Rejection({"embed_dim": 4, "num_head": 0}, ((1, 4, 4, 4),), "num_head 0 must be >= 1"),
        Rejection({"embed_dim": 4, "num_head": 2, "kernel_size": 0}, ((1, 4, 4, 4),), "kernel_size 0 must be >= 1"),
        Rejection({"embed_dim": 4, "num_head": 2, "strides": 0}, ((1, 4, 4, 4),), "strides 0 must be >= 1"),
        Rejection({"embed_dim": 4, "num_head": 2, "padding": 2}, ((1, 4, 4, 4),), "padding 2 must be 0 or 1: it is a flag"),
        Rejection({"embed_dim": 4, "num_head": 2, "padding": True}, ((1, 4, 4, 4),), "padding True must be an integer"),
        Rejection(
            {"embed_dim": 4, "num_head": 2, "kernel_size": 3, "padding": 0, "strides": 2},
            ((1, 4, 4, 4),),
            "kernel_size 3 is larger than strides 2 with padding 0",
        ),
        Rejection(
            {"embed_dim": 4, "num_head": 2, "kernel_size": 2, "padding": 1, "strides": 1},
            ((1, 4, 4, 4),),
            "kernel_size 2 is even with padding 1 and strides 1",
        ),
        Rejection(
            {"embed_dim": 4, "num_head": 2, "kernel_size": 2, "padding": 1, "strides": 2},
            ((1, 4, 5, 4),),
            "height 4 gives 2 pooled positions, ceil(4 / strides 2), but 3 windows of kernel_size 2 on the map padded by 1",
        ),
        Rejection(
            {"embed_dim": 4, "num_head": 2, "kernel_size": 3, "padding": 0, "strides": 3},
            ((1, 6, 5, 4),),
            "width 5 gives 2 pooled positions, ceil(5 / strides 3), but 1 window of kernel_size 3 on the map padded by 0",
        ),
        Rejection({"embed_dim": 4, "num_head": 2, "attn_dropout": 1.0}, ((1, 4, 4, 4),), "attn_dropout 1.0 must be a finite real in [0.0, 1.0)"),
        Rejection({"embed_dim": 4, "num_head": 2, "output_dropout": -0.1}, ((1, 4, 4, 4),), "output_dropout -0.1 must be a finite real in [0.0, 1.0)"),
        Rejection({"embed_dim": 4, "num_head": 2}, ((1, 16, 4),), "inputs shape (1, 16, 4) must have rank 4"),
    ),
    notes=(
        "Pooling: the 2021 code pools with a VALID average pool (floor(H / strides) positions) but "
        "reshapes the attention to ceil(H / strides) positions, so any size that strides does not "
        "divide crashes. This spec pools in ceil mode and averages only the pixels inside the map, as "
        "PyTorch's AvgPool2d(ceil_mode=True) in timm's VOLO does; where the 2021 code runs, this is its "
        "pool exactly.",
        "Fold: the 2021 code folds with a trick that only handles windows overlapping once (kernel 3, "
        "strides 2) and an even number of windows per axis. This spec folds by the plain sum of "
        "overlaps for every kernel size, stride and padding, and rejects a configuration only where "
        "the pooled positions and the unfolded windows differ in number (then no window-to-position "
        "pairing exists): padding 0 needs kernel_size <= strides; padding 1 with an even kernel needs "
        "strides >= 2 and sizes that strides does not divide; padding 1 with an odd kernel fits every size.",
        "padding: in the 2021 code a flag (1 pads kernel_size // 2 pixels, any other value none); in "
        "timm a pixel count, so padding=1 means the same in both only for kernel sizes 2 and 3 (VOLO's 3): "
        "timm pads 1 pixel where the 2021 code pads 0 for kernel 1 and 2 for kernels 4 and 5. This spec "
        "follows the 2021 flag and accepts only 0 and 1, so a pixel count such as padding=2 is an error "
        "instead of silently meaning no padding.",
        "Scale: the 2021 code divides the logits (bias included) by sqrt(embed_dim // num_head); timm "
        "multiplies by head_dim ** -0.5, the same up to rounding.",
        "The README's usage line outlook_attention(inputs, 4, 192) passes embed_dim=4, num_head=192 "
        "positionally, which leaves 0 channels per head; it is rejected with a message naming the swap. "
        "The documented example is embed_dim=192, num_head=4.",
        "The output has embed_dim channels; the input may have any number (in VOLO they are equal).",
    ),
)


# --------------------------------------------------------------------------------------------
# outlook_attention_simple


def outlook_attention_simple(inputs: np.ndarray, *, weights, embed_dim, num_head=6, kernel_size=3, attn_dropout=0) -> np.ndarray:
    """Outlook attention on non-overlapping ``k x k`` windows.

    Input ``x [B, H, W, C]``; ``k = kernel_size``, ``n = num_head``, ``E = embed_dim``,
    ``d = E // n``.

    1. Padding: ``x`` is zero-padded at the bottom by ``ceil(H / k) * k - H`` rows and at the
       right by ``ceil(W / k) * k - W`` columns (each axis by its own amount), giving
       ``[B, Hp, Wp, C]`` and ``P = Hp / k``, ``Q = Wp / k`` windows.
    2. Value: ``v = padded @ v/kernel``, ``[B, Hp, Wp, E]`` (no bias, so padded pixels hold 0).
    3. Pooling: the mean of each ``k x k`` window of the padded map, divisor ``k*k`` (padding
       zeros counted).
    4. Logits: ``(pooled @ attn/kernel + attn/bias) / sqrt(d)``, ``[B, P, Q, n * k^4]``;
       channel ``h * k^4 + i * k^2 + j`` is head ``h``'s logit from window offset ``j`` to
       offset ``i``, offsets numbered row-major (``i = ki * k + kj``). Softmax over ``j``; offsets
       on padding take part unmasked.
    5. Window ``(m, q)`` offset ``(ki, kj)`` is the padded pixel ``(m*k + ki, q*k + kj)``.
       ``out[i, h*d + e] = sum_j a[h, i, j] * v[j, h*d + e]`` (head ``h`` owns the contiguous
       channels ``h*d .. h*d + d - 1``), written back to pixel ``i`` of the same window.
    6. The output is cropped to ``[B, H, W, E]``, then ``@ out/kernel + out/bias``.

    ``attn_dropout`` is inactive at inference.
    """
    _, height, width, _ = inputs.shape
    padded = pad(inputs, ((0, ceil_div(height, kernel_size) * kernel_size - height), (0, ceil_div(width, kernel_size) * kernel_size - width)))
    # On a map of whole windows, the ceil-mode pool is the plain k x k average, divisor k*k.
    logits = _projected_logits(ceil_average_pool(padded, kernel_size), weights, embed_dim, num_head)
    mixed = attend_windows(unfold(padded @ weights["v/kernel"], kernel_size, kernel_size), logits, num_head)
    out = fold(mixed, padded.shape[1:3], kernel_size)[:, :height, :width]
    out = out @ weights["out/kernel"]
    out += weights["out/bias"]
    return out


def _sample_simple_config(draw):
    return {**_sample_heads(draw), "kernel_size": draw.integer("kernel_size", 1, 4), "attn_dropout": draw.real("attn_dropout", 0.0, 0.9)}


def _sample_simple_shapes(config, draw):
    side = (1, MAX_OUTLOOK_SIDE)
    return ((_sampling.batch(draw), draw.integer("height", *side), draw.integer("width", *side), _sampling.channels(draw)),)


OUTLOOK_ATTENTION_SIMPLE = LayerSpec(
    name="outlook_attention_simple",
    family="volo",
    kind="block",
    summary="Outlook attention on non-overlapping windows of a map zero-padded to whole windows.",
    params=(
        _EMBED_DIM,
        Param("num_head", 6, Integer(minimum=1, sample_range=(1, 3)), _NUM_HEAD_DOC),
        Param("kernel_size", 3, Integer(minimum=1, sample_range=(1, 4)), "Side of the square, non-overlapping windows."),
        _ATTN_DROPOUT,
    ),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=outlook_attention_simple,
    weights=_outlook_weights,
    output_shape=lambda config, shape: (*shape[:3], config["embed_dim"]),
    check=no_extra_check,
    check_config=lambda config: _check_heads("outlook_attention_simple", config),
    sample_config=_sample_simple_config,
    sample_input_shapes=_sample_simple_shapes,
    examples=(
        Example(
            "readme_size",
            {"embed_dim": 192, "num_head": 4},
            ((1, 28, 28, 192),),
            source="2021 code (07209e2), the configuration of outlook_attention's README usage",
            documented_output_shape=(1, 28, 28, 192),
            documented_weights=_README_OUTLOOK_WEIGHTS,
            fixture=False,
        ),
        Example(
            "readme_config",
            {"embed_dim": 192, "num_head": 4},
            ((1, 4, 4, 192),),
            source="2021 code (07209e2) configuration on a small map padded like 28 x 28 (2 rows, 2 columns)",
            documented_output_shape=(1, 4, 4, 192),
            documented_weights=_README_OUTLOOK_WEIGHTS,
        ),
        Example("small_non_square_padding", {"embed_dim": 6, "num_head": 2}, ((2, 4, 8, 5),), source="spec"),
        Example("small_kernel_2_whole_windows", {"embed_dim": 4, "num_head": 2, "kernel_size": 2}, ((1, 4, 6, 3),), source="spec"),
    ),
    rejections=(
        Rejection({"embed_dim": 4}, ((1, 6, 6, 4),), "embed_dim 4 is smaller than num_head 6 (0 channels per head)"),
        Rejection(
            {"embed_dim": 4, "num_head": 192},
            ((1, 28, 28, 192),),
            "embed_dim 4 is smaller than num_head 192 (0 channels per head); did you mean embed_dim=192, num_head=4?",
        ),
        Rejection({"embed_dim": 8, "num_head": 3}, ((1, 6, 6, 4),), "embed_dim 8 is not a multiple of num_head 3"),
        Rejection({}, ((1, 6, 6, 4),), "config parameter 'embed_dim' is required"),
        Rejection({"embed_dim": 6, "kernel_size": 0}, ((1, 6, 6, 4),), "kernel_size 0 must be >= 1"),
        Rejection({"embed_dim": 6, "attn_dropout": 1.0}, ((1, 6, 6, 4),), "attn_dropout 1.0 must be a finite real in [0.0, 1.0)"),
        Rejection({"embed_dim": 6}, ((1, 36, 4),), "inputs shape (1, 36, 4) must have rank 4"),
    ),
    notes=(
        "The 2021 code pads and crops both axes by the height's amount, so a non-square map whose "
        "sides need different padding (28 x 27 with kernel 3) crashes; this spec pads each axis to its "
        "own multiple of kernel_size.",
        "Kept from the 2021 code: the average pool counts the zero padding (divisor kernel_size ** 2), "
        "and padded offsets take part in the softmax unmasked, with value zero.",
        "Same weight names and shapes as outlook_attention.",
    ),
)


# --------------------------------------------------------------------------------------------
# BiasLayer


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
            "documented",
            {},
            ((2, 14, 14, 192),),
            source="2021 code (07209e2)",
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


# --------------------------------------------------------------------------------------------
# PositionalEmbedding and ClassToken


def positional_embedding(inputs: np.ndarray, *, weights) -> np.ndarray:
    """``inputs [B, H, W, C] + positional_embedding [1, H, W, C]``: one learned vector per pixel,
    the same for every batch entry."""
    return inputs + weights["positional_embedding"]


POSITIONAL_EMBEDDING = LayerSpec(
    name="PositionalEmbedding",
    family="volo",
    kind="layer",
    summary="A learned embedding per position of the map, added to the input.",
    params=(),
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=positional_embedding,
    weights=lambda config, input_shape: [Weight("positional_embedding", (1, *input_shape[1:]))],
    output_shape=lambda config, input_shape: input_shape,
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.feature_map(draw),),
    examples=(
        Example(
            "documented",
            {},
            ((2, 8, 16, 49),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 8, 16, 49),
            documented_weights={"positional_embedding": (1, 8, 16, 49)},
        ),
        Example("small", {}, ((3, 2, 5, 3),), source="spec"),
    ),
    rejections=(
        Rejection({"stddev": 0.2}, ((1, 2, 2, 3),), "unknown config parameter 'stddev'"),
        Rejection({}, ((2, 8, 49),), "inputs shape (2, 8, 49) must have rank 4"),
    ),
    notes=(
        "The 2021 initialiser (truncated normal, std 0.2) is not semantics; the weight's shape "
        "(1, H, W, C) and that it is added are. Its `load_resized_pos_emb` helper (resizing a trained "
        "embedding to another map size) is a weight-loading utility outside the forward semantics.",
    ),
)


def class_token(inputs: np.ndarray, *, weights) -> np.ndarray:
    """``[B, N, C]`` -> ``[B, N + 1, C]``: ``tokens [1, 1, C]`` becomes token 0 of every batch
    entry, followed by the input tokens in order."""
    tokens = np.broadcast_to(weights["tokens"], (inputs.shape[0], 1, inputs.shape[2]))
    return np.concatenate([tokens, inputs], axis=1)


CLASS_TOKEN = LayerSpec(
    name="ClassToken",
    family="volo",
    kind="layer",
    summary="A learned class token prepended to the token sequence.",
    params=(),
    inputs=(Input("inputs", "tokens"),),
    output_kind="tokens",
    forward=class_token,
    weights=lambda config, input_shape: [Weight("tokens", (1, 1, input_shape[-1]))],
    output_shape=lambda config, input_shape: (input_shape[0], input_shape[1] + 1, input_shape[2]),
    check=no_extra_check,
    sample_input_shapes=lambda config, draw: (_sampling.tokens(draw),),
    examples=(
        Example(
            "documented",
            {},
            ((2, 196, 192),),
            source="2021 code (07209e2)",
            documented_output_shape=(2, 197, 192),
            documented_weights={"tokens": (1, 1, 192)},
            fixture=False,
        ),
        Example("documented_config", {}, ((1, 4, 192),), source="2021 code (07209e2)", documented_weights={"tokens": (1, 1, 192)}),
        Example("small", {}, ((3, 4, 5),), source="spec"),
    ),
    rejections=(
        Rejection({"stddev": 0.2}, ((1, 4, 3),), "unknown config parameter 'stddev'"),
        Rejection({}, ((2, 14, 14, 192),), "inputs shape (2, 14, 14, 192) must have rank 3"),
    ),
    notes=("The 2021 initialiser (truncated normal, std 0.2) is not semantics; the weight's shape (1, 1, C) and its place, token 0, are.",),
)

SPECS = (OUTLOOK_ATTENTION, OUTLOOK_ATTENTION_SIMPLE, BIAS_LAYER, POSITIONAL_EMBEDDING, CLASS_TOKEN)
