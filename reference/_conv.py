"""Convolution, padding and normalisation primitives shared by the layer definitions.

Everything is channels-last (``[batch, height, width, channels]``), float64, and takes kernels in
Keras layouts: ``Conv2D`` ``(kh, kw, in / groups, out)``, ``DepthwiseConv2D`` ``(kh, kw, C, multiplier)``.
Convolutions here are VALID (no padding of their own): each layer pads explicitly first, with
:func:`pad` and the amounts its spec pins (:func:`symmetric_padding`, :func:`tf_same_padding`), so the
padding rule of every layer is written down once, in its own module.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]


def pair(value) -> Pair:
    """An int or a length-2 sequence as ``(height, width)``."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


# --------------------------------------------------------------------------------------------
# Padding


def symmetric_padding(kernel_size) -> tuple[Pair, Pair]:
    """``k // 2`` zeros before and after, per axis (PyTorch-style "same" for odd kernels)."""
    kh, kw = pair(kernel_size)
    return (kh // 2, kh // 2), (kw // 2, kw // 2)


def tf_same_padding(size: Pair, kernel_size, strides) -> tuple[Pair, Pair]:
    """TensorFlow's SAME: output ``ceil(size / stride)``; the total padding is split with the odd
    element at the bottom / right."""
    out = []
    for n, k, s in zip(size, pair(kernel_size), pair(strides)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        out.append((total // 2, total - total // 2))
    return out[0], out[1]


def pad(x: np.ndarray, padding: tuple[Pair, Pair]) -> np.ndarray:
    """Zero-pad the two spatial axes of a ``[B, H, W, C]`` map."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    batch, height, width, channels = x.shape
    out = np.empty((batch, top + height + bottom, left + width + right, channels), dtype=x.dtype)
    # Zeros written to the border only: the interior is written once, by the copy of x.
    out[:, :top] = 0
    out[:, top + height :] = 0
    out[:, top : top + height, :left] = 0
    out[:, top : top + height, left + width :] = 0
    out[:, top : top + height, left : left + width] = x
    return out


# --------------------------------------------------------------------------------------------
# Convolutions (VALID)


def _windows(x: np.ndarray, kernel_hw: Pair, strides) -> np.ndarray:
    """``[B, Ho, Wo, C, kh, kw]``: the receptive field of every output position."""
    sh, sw = pair(strides)
    windows = sliding_window_view(x, kernel_hw, axis=(1, 2))
    return windows[:, ::sh, ::sw]


def output_size(size: int, kernel: int, stride: int) -> int:
    """Positions of a VALID convolution along one axis."""
    return (size - kernel) // stride + 1


def conv2d(x: np.ndarray, kernel: np.ndarray, strides=1, groups: int = 1, bias: np.ndarray | None = None) -> np.ndarray:
    """VALID 2D convolution (cross-correlation, as every framework computes it).

    ``kernel`` is ``(kh, kw, C / groups, O)``. With ``groups`` g, input channels and output
    channels are split into g contiguous blocks, and output block i sees only input block i.
    """
    kh, kw, per_group, out_channels = kernel.shape
    channels = x.shape[-1]
    if channels != per_group * groups or out_channels % groups:
        raise ValueError(f"conv2d: input channels {channels}, kernel {kernel.shape} and groups {groups} do not fit")
    windows = _windows(x, (kh, kw), strides)  # [B, Ho, Wo, C, kh, kw], a view
    batch, out_h, out_w = windows.shape[:3]
    per_out = out_channels // groups
    # A matrix product per group: the receptive fields as rows [g, positions, kh*kw*C/g] times the
    # group's kernel [g, kh*kw*C/g, O/g]. The rows are a copy (kh*kw times the input), so they are
    # built a band of output rows at a time, at most _COLUMNS_BLOCK elements.
    fields = windows.reshape(batch, out_h, out_w, groups, per_group, kh, kw).transpose(3, 0, 1, 2, 5, 6, 4)
    grouped = kernel.reshape(kh * kw, per_group, groups, per_out).transpose(2, 0, 1, 3).reshape(groups, kh * kw * per_group, per_out)
    band = max(1, _COLUMNS_BLOCK // (out_w * kh * kw * channels))
    out = np.empty((batch, out_h, out_w, out_channels))
    for b in range(batch):
        for top in range(0, out_h, band):
            rows = np.ascontiguousarray(fields[:, b, top : top + band]).reshape(groups, -1, kh * kw * per_group)
            products = np.matmul(rows, grouped)  # [g, positions, O/g]
            out[b, top : top + band] = products.transpose(1, 0, 2).reshape(-1, out_w, out_channels)
    return out if bias is None else _add_in_place(out, bias)


_COLUMNS_BLOCK = 1 << 20
"""Elements of receptive-field rows built at once by :func:`conv2d` (8 MiB)."""


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, strides=1, bias: np.ndarray | None = None) -> np.ndarray:
    """VALID depthwise convolution; ``kernel`` is ``(kh, kw, C, multiplier)`` and output channel
    ``c * multiplier + m`` is input channel c through filter m (Keras' order)."""
    kh, kw, channels, multiplier = kernel.shape
    if x.shape[-1] != channels:
        raise ValueError(f"depthwise_conv2d: input channels {x.shape[-1]} do not match kernel {kernel.shape}")
    windows = _windows(x, (kh, kw), strides)  # [B, Ho, Wo, C, kh, kw], a view
    # Without optimize, einsum runs one fused loop over the strided view: no copy of the windows.
    out = np.einsum("bhwcij,ijcm->bhwcm", windows, kernel, optimize=False)
    out = out.reshape(*out.shape[:3], channels * multiplier)
    return out if bias is None else _add_in_place(out, bias)


def _add_in_place(out: np.ndarray, bias: np.ndarray) -> np.ndarray:
    out += bias
    return out


# --------------------------------------------------------------------------------------------
# Normalisation (inference form)


def batch_norm(x: np.ndarray, gamma, beta, moving_mean, moving_variance, epsilon: float = 1e-5) -> np.ndarray:
    """``(x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta`` on the last axis.

    Evaluated as ``x * scale + shift`` with ``scale = gamma / sqrt(moving_variance + epsilon)``
    and ``shift = beta - moving_mean * scale`` (per channel), as PyTorch and TensorFlow evaluate
    inference batch norm: mathematically the same, two passes over ``x`` instead of three. The
    rounding differs from the centred form by a few ulp of ``|x * scale| + |moving_mean * scale|``
    (more than a few ulp of the output only where x is close to a moving mean far from 0).
    """
    scale = gamma / np.sqrt(moving_variance + epsilon)
    shift = beta - moving_mean * scale
    out = x * scale
    out += shift
    return out


def layer_norm(x: np.ndarray, gamma, beta, epsilon: float) -> np.ndarray:
    """Normalise over the last axis with the biased variance, then scale and shift."""
    channels = x.shape[-1]
    mean = np.einsum("...c->...", x)  # einsum sums short rows several times faster than ndarray.mean
    mean /= channels
    centred = x - mean[..., None]
    variance = np.einsum("...c,...c->...", centred, centred)
    variance /= channels
    variance += epsilon
    centred /= np.sqrt(variance, out=variance)[..., None]
    centred *= gamma
    centred += beta
    return centred


def group_norm(x: np.ndarray, gamma, beta, groups: int, epsilon: float) -> np.ndarray:
    """Normalise each of ``groups`` contiguous channel blocks over the spatial axes and the
    block's channels (biased variance), then scale and shift per channel. ``x`` is ``[B, ..., C]``."""
    shape = x.shape
    grouped = x.reshape(shape[0], -1, groups, shape[-1] // groups)
    count = grouped.shape[1] * grouped.shape[3]
    centred = grouped - np.einsum("bngc->bg", grouped)[:, None, :, None] / count
    variance = np.einsum("bngc,bngc->bg", centred, centred)[:, None, :, None] / count
    centred /= np.sqrt(variance + epsilon)
    normalised = centred.reshape(shape)
    normalised *= gamma
    normalised += beta
    return normalised
