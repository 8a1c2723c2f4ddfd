"""PyTorch modules from HaloNet: HaloAttention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference
from impls.torch._mapping import LINEAR, Canonical, CanonicalWeights, checked_config


def window_relative_index(block_size: int, window: int) -> torch.Tensor:
    """``[i, j] -> window - 1 + j - i``: the row of a relative table for the query at i inside
    its block and the key at j inside its window."""
    return window - 1 + torch.arange(window)[None, :] - torch.arange(block_size)[:, None]


class HaloAttention(CanonicalWeights):
    """Multi-head self-attention of each ``block_size x block_size`` block of queries over a
    ``block_size + 2 * halo_size`` window of keys around it, with relative 2D position logits,
    on a ``[B, C, H, W]`` map (HaloNet). H and W must be multiples of ``block_size``; the
    module works on any such map, since its tables depend only on the block and the halo.

    Position tables are stored one row per offset, ``rel_height: (2*win - 1, key_dim)``, the
    transpose of the canonical ``r_height``.
    """

    def __init__(
        self,
        in_channels: int,
        num_heads: int = 4,
        key_dim: int = 128,
        block_size: int = 2,
        halo_size: int = 1,
        out_shape: int | None = None,
        out_weight: bool = True,
        out_bias: bool = False,
        attn_dropout: float = 0.0,
    ):
        super().__init__()
        config = checked_config(
            "HaloAttention",
            num_heads=num_heads,
            key_dim=key_dim,
            block_size=block_size,
            halo_size=halo_size,
            out_shape=out_shape,
            out_weight=out_weight,
            out_bias=out_bias,
            attn_dropout=attn_dropout,
        )
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"HaloAttention: in_channels {in_channels!r} must be an integer >= 1")
        self.config = config
        self.in_channels, self.num_heads, self.key_dim = in_channels, num_heads, key_dim
        self.block_size, self.halo_size = block_size, halo_size
        self.window = block_size + 2 * halo_size
        embed_dim = num_heads * key_dim
        out_channels = out_shape if out_weight and out_shape is not None else embed_dim
        self.query = nn.Linear(in_channels, embed_dim, bias=False)
        self.key_value = nn.Linear(in_channels, 2 * embed_dim, bias=False)
        self.output = nn.Linear(embed_dim, out_channels, bias=out_bias) if out_weight else None
        self.output_bias = nn.Parameter(torch.zeros(out_channels)) if out_bias and not out_weight else None
        self.rel_height = nn.Parameter(torch.randn(2 * self.window - 1, key_dim) * key_dim**-0.5)
        self.rel_width = nn.Parameter(torch.randn(2 * self.window - 1, key_dim) * key_dim**-0.5)
        self.register_buffer("relative_index", window_relative_index(block_size, self.window), persistent=False)
        self.attn_drop = nn.Dropout(config["attn_dropout"])

    def windows(self, key_value: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, 2E]`` -> ``[B, heads, rows, cols, win*win, 2*key_dim]``: each block's
        window of the zero-padded projection, key then value channels per head."""
        halo = self.halo_size
        padded = F.pad(key_value.permute(0, 3, 1, 2), (halo, halo, halo, halo))
        windows = padded.unfold(2, self.window, self.block_size).unfold(3, self.window, self.block_size)
        batch, _, rows, cols = windows.shape[:4]  # [B, 2E, rows, cols, win, win]
        windows = windows.reshape(batch, self.num_heads, 2 * self.key_dim, rows, cols, self.window * self.window)
        return windows.permute(0, 1, 3, 4, 5, 2)

    def position_logits(self, query: torch.Tensor) -> torch.Tensor:
        """Blocked query ``[B, heads, rows, cols, b, b, d]`` -> ``[B, heads, rows, cols, b, b, win, win]``."""
        along_height = torch.einsum("bnrcxyd,xud->bnrcxyu", query, self.rel_height[self.relative_index])
        along_width = torch.einsum("bnrcxyd,yvd->bnrcxyv", query, self.rel_width[self.relative_index])
        return along_height[..., :, None] + along_width[..., None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"HaloAttention: inputs shape {tuple(x.shape)} must be [batch, {self.in_channels}, height, width]")
        batch, _, height, width = x.shape
        reference.validate("HaloAttention", (batch, height, width, self.in_channels), **self.config)
        block, heads, key_dim = self.block_size, self.num_heads, self.key_dim
        rows, cols = height // block, width // block

        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        query = self.query(x) * key_dim**-0.5
        query = query.reshape(batch, rows, block, cols, block, heads, key_dim).permute(0, 5, 1, 3, 2, 4, 6)
        key, value = self.windows(self.key_value(x)).split(key_dim, dim=-1)

        logits = query.reshape(batch, heads, rows, cols, block * block, key_dim) @ key.transpose(-1, -2)
        logits = logits + self.position_logits(query).reshape(logits.shape)
        attention = self.attn_drop(logits.softmax(dim=-1))
        attended = (attention @ value).reshape(batch, heads, rows, cols, block, block, key_dim)
        out = attended.permute(0, 2, 4, 3, 5, 1, 6).reshape(batch, height, width, heads * key_dim)
        if self.output is not None:
            out = self.output(out)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out.permute(0, 3, 1, 2)

    def canonical_weights(self):
        mapping = {"query": Canonical("query.weight", LINEAR), "key_value": Canonical("key_value.weight", LINEAR)}
        if self.output is not None:
            mapping["output_weight"] = Canonical("output.weight", LINEAR)
            if self.output.bias is not None:
                mapping["output_bias"] = Canonical("output.bias")
        if self.output_bias is not None:
            mapping["output_bias"] = Canonical("output_bias")
        mapping["r_width"] = Canonical("rel_width", LINEAR)
        mapping["r_height"] = Canonical("rel_height", LINEAR)
        return mapping

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("HaloAttention", input_shape, **config)
        return cls(input_shape[-1], **config)


MODULES = {"HaloAttention": HaloAttention}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch``."""
__all__ = ["HaloAttention"]
