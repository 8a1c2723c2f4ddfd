"""PyTorch modules from ResMLP: ChannelAffine."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import (
    Canonical, CanonicalWeights, channel_axis, channel_axis_shape, check_channels, checked_channel_dim, checked_config, positive_sizes,
)


class ChannelAffine(CanonicalWeights):
    """Per-channel ``x * weight + bias`` along the channel axis: by default (``channel_dim``
    None) axis 1 of ``[B, C, H, W]`` maps and the last axis of ``[B, C]`` and ``[B, N, C]``."""

    def __init__(self, num_channels: int, use_bias: bool = True, weight_init_value: float = 1.0, channel_dim: int | None = None):
        super().__init__()
        positive_sizes(type(self).__name__, num_channels=num_channels)
        config = checked_config("ChannelAffine", use_bias=use_bias, weight_init_value=weight_init_value)
        self.channel_dim = checked_channel_dim(type(self).__name__, channel_dim)
        self.weight = nn.Parameter(torch.full((num_channels,), config["weight_init_value"]))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if config["use_bias"] else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = channel_axis(self.channel_dim, x.ndim)
        check_channels("ChannelAffine", x, axis, self.weight.numel())
        shape = channel_axis_shape(self.weight.numel(), axis, x.ndim)
        out = x * self.weight.view(shape)
        return out if self.bias is None else out + self.bias.view(shape)

    def canonical_weights(self):
        return {"weight": Canonical("weight"), **({"bias": Canonical("bias")} if self.bias is not None else {})}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("ChannelAffine", input_shape, **config)
        return cls(input_shape[-1], **config)  # the default channel axis, so the conformance checks hold its rule


MODULES = {"ChannelAffine": ChannelAffine}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["ChannelAffine"]
