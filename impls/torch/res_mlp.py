"""PyTorch modules from ResMLP: ChannelAffine."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import Canonical, CanonicalWeights, channel_axis_shape, check_channels, checked_config


class ChannelAffine(CanonicalWeights):
    """Per-channel ``x * weight + bias`` along ``channel_dim`` (1 for ``[B, C, H, W]`` maps,
    -1 for ``[B, N, C]`` tokens)."""

    def __init__(self, num_channels: int, use_bias: bool = True, weight_init_value: float = 1.0, channel_dim: int = 1):
        super().__init__()
        config = checked_config("ChannelAffine", use_bias=use_bias, weight_init_value=weight_init_value)
        reference.validate("ChannelAffine", (1, num_channels), **config)
        self.channel_dim = channel_dim
        self.weight = nn.Parameter(torch.full((num_channels,), config["weight_init_value"]))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if config["use_bias"] else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels("ChannelAffine", x, self.channel_dim, self.weight.numel())
        shape = channel_axis_shape(self.weight.numel(), self.channel_dim, x.ndim)
        out = x * self.weight.view(shape)
        return out if self.bias is None else out + self.bias.view(shape)

    def canonical_weights(self):
        return {"weight": Canonical("weight"), **({"bias": Canonical("bias")} if self.bias is not None else {})}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("ChannelAffine", input_shape, **config)
        return cls(input_shape[-1], channel_dim=1 if len(input_shape) == 4 else -1, **config)


MODULES = {"ChannelAffine": ChannelAffine}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["ChannelAffine"]
