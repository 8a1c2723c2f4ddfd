"""PyTorch modules from VOLO: BiasLayer."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import Canonical, CanonicalWeights, channel_axis_shape, check_channels


class BiasLayer(CanonicalWeights):
    """``x + bias`` along ``channel_dim`` (1 for ``[B, C, H, W]`` maps, -1 for tokens)."""

    def __init__(self, num_channels: int, channel_dim: int = 1):
        super().__init__()
        reference.validate("BiasLayer", (1, num_channels))
        self.channel_dim = channel_dim
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels("BiasLayer", x, self.channel_dim, self.bias.numel())
        return x + self.bias.view(channel_axis_shape(self.bias.numel(), self.channel_dim, x.ndim))

    def canonical_weights(self):
        return {"bias": Canonical("bias")}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("BiasLayer", input_shape, **config)
        return cls(input_shape[-1], channel_dim=1 if len(input_shape) == 4 else -1)


MODULES = {"BiasLayer": BiasLayer}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["BiasLayer"]
