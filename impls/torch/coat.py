"""PyTorch modules from CoaT: ConvPositionalEncoding, ConvRelativePositionalEncoding and
ChannelLayerNorm (the 2021 ``layer_norm``).

The positional encodings take token sequences, ``[B, N, C]`` and ``[B, heads, N, d]``, which
are the same in every layout: token 0 is the class token and tokens ``1 .. N-1`` a square grid,
row-major. The grid side is read off N at each call and a non-square N is rejected with the
reference's error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference
from impls.torch._mapping import (
    DEPTHWISE_CONV2D, Canonical, CanonicalWeights, channel_axis, check_channels, checked_channel_dim, checked_config, positive_sizes,
)
from reference.coat import LAYER_NORM_EPSILON, grid_side


def depthwise_conv(channels: int, kernel_size: int) -> nn.Conv2d:
    """A depthwise ``k x k`` convolution with bias padding ``k // 2`` zeros on every side."""
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)


class ConvPositionalEncoding(CanonicalWeights):
    """``x + depthwise_conv(x)`` over the grid tokens of ``[B, N, C]``; the class token (token
    0) passes through unchanged."""

    def __init__(self, dim: int, kernel_size: int = 3):
        positive_sizes(type(self).__name__, dim=dim)
        super().__init__()
        config = checked_config("ConvPositionalEncoding", kernel_size=kernel_size)
        reference.validate("ConvPositionalEncoding", (1, 2, dim), **config)
        self.proj = depthwise_conv(dim, config["kernel_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"ConvPositionalEncoding: inputs shape {tuple(x.shape)} must have rank 3: [batch, tokens, channels]")
        check_channels("ConvPositionalEncoding", x, -1, self.proj.in_channels)
        side = grid_side("ConvPositionalEncoding", x.shape[1])
        batch, _, channels = x.shape
        class_token, grid_tokens = x[:, :1], x[:, 1:]
        grid = grid_tokens.transpose(1, 2).reshape(batch, channels, side, side)
        encoded = (grid + self.proj(grid)).flatten(2).transpose(1, 2)
        return torch.cat([class_token, encoded], dim=1)

    def canonical_weights(self):
        return {"depthwise_kernel": Canonical("proj.weight", DEPTHWISE_CONV2D), "bias": Canonical("proj.bias")}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("ConvPositionalEncoding", input_shape, **config)
        return cls(input_shape[-1], **config)


class ConvRelativePositionalEncoding(CanonicalWeights):
    """``forward(q, v)`` on ``[B, heads, N, head_dim]``: ``q * depthwise_conv(v)`` over the grid
    tokens, one convolution per group of ``head_splits[s]`` heads with kernel
    ``head_kernel_size[s]``; the class-token row is zero.

    Group ``s`` convolves the channels ``head * head_dim + j`` of its heads (heads in order, then
    components), so ``convs[s]`` has ``head_splits[s] * head_dim`` channels.
    """

    def __init__(self, head_dim: int, head_splits=(2, 3, 3), head_kernel_size=(3, 5, 7)):
        positive_sizes(type(self).__name__, head_dim=head_dim)
        super().__init__()
        config = checked_config("ConvRelativePositionalEncoding", head_splits=head_splits, head_kernel_size=head_kernel_size)
        heads = sum(config["head_splits"])
        reference.validate("ConvRelativePositionalEncoding", (1, heads, 2, head_dim), (1, heads, 2, head_dim), **config)
        self.head_dim, self.num_heads = head_dim, heads
        self.head_splits = config["head_splits"]
        self.convs = nn.ModuleList(depthwise_conv(split * head_dim, k) for split, k in zip(self.head_splits, config["head_kernel_size"]))

    def forward(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        expected = f"[batch, {self.num_heads}, tokens, {self.head_dim}]"
        for name, tensor in (("query", q), ("value", v)):
            if tensor.ndim != 4 or tensor.shape[1] != self.num_heads or tensor.shape[3] != self.head_dim:
                raise ValueError(f"ConvRelativePositionalEncoding: {name} shape {tuple(tensor.shape)} must be {expected}, as this module was built for")
        if v.shape != q.shape:
            raise ValueError(f"ConvRelativePositionalEncoding: value shape {tuple(v.shape)} must equal the query shape {tuple(q.shape)}")
        side = grid_side("ConvRelativePositionalEncoding", q.shape[2])
        batch = q.shape[0]
        # [B, heads, side * side, d] -> [B, heads * d, side, side]: channel head * d + j.
        grid = v[:, :, 1:].transpose(-1, -2).reshape(batch, self.num_heads * self.head_dim, side, side)
        groups = grid.split([split * self.head_dim for split in self.head_splits], dim=1)
        conv = torch.cat([conv(group) for conv, group in zip(self.convs, groups)], dim=1)
        conv = conv.reshape(batch, self.num_heads, self.head_dim, side * side).transpose(-1, -2)
        return F.pad(q[:, :, 1:] * conv, (0, 0, 1, 0))

    def canonical_weights(self):
        mapping = {}
        for index in range(len(self.convs)):
            mapping[f"depth_conv_{index + 1}/depthwise_kernel"] = Canonical(f"convs.{index}.weight", DEPTHWISE_CONV2D)
            mapping[f"depth_conv_{index + 1}/bias"] = Canonical(f"convs.{index}.bias")
        return mapping

    @classmethod
    def from_canonical(cls, config, query_shape, value_shape):
        reference.validate("ConvRelativePositionalEncoding", query_shape, value_shape, **config)
        return cls(query_shape[-1], **config)


class ChannelLayerNorm(nn.LayerNorm, CanonicalWeights):
    """``nn.LayerNorm`` with epsilon 1e-6 over the channel axis: by default (``channel_dim``
    None) axis 1 of ``[B, C, H, W]`` maps and the last axis of ``[B, C]`` and ``[B, N, C]``
    (plain LayerNorm); an integer ``channel_dim`` fixes the axis."""

    def __init__(self, num_channels: int, channel_dim: int | None = None):
        positive_sizes(type(self).__name__, num_channels=num_channels)
        super().__init__(num_channels, eps=LAYER_NORM_EPSILON)
        self.channel_dim = checked_channel_dim(type(self).__name__, channel_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = channel_axis(self.channel_dim, x.ndim)
        check_channels("layer_norm", x, axis, self.normalized_shape[0])
        if axis in (-1, x.ndim - 1):
            return super().forward(x)
        return super().forward(x.movedim(axis, -1)).movedim(-1, axis)

    def canonical_weights(self):
        return {"ln/gamma": Canonical("weight"), "ln/beta": Canonical("bias")}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("layer_norm", input_shape, **config)
        return cls(input_shape[-1])  # the default channel axis, so the conformance checks hold its rule


MODULES = {
    "ConvPositionalEncoding": ConvPositionalEncoding,
    "ConvRelativePositionalEncoding": ConvRelativePositionalEncoding,
    "layer_norm": ChannelLayerNorm,
}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["ConvPositionalEncoding", "ConvRelativePositionalEncoding", "ChannelLayerNorm"]
