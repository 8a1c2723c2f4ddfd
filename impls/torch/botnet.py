"""PyTorch modules from BoTNet: MHSAWithPositionEmbedding."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import LINEAR, Canonical, CanonicalWeights, checked_config, pair_of_sizes, positive_sizes


def relative_index(size: int) -> torch.Tensor:
    """``[i, j] -> size - 1 + j - i``: the row of a relative table for query i, key j."""
    positions = torch.arange(size)
    return size - 1 + positions[None, :] - positions[:, None]


class MHSAWithPositionEmbedding(CanonicalWeights):
    """Multi-head self-attention over a ``[B, C, H, W]`` map with relative (or absolute) 2D
    position logits, as in BoTNet. ``feat_size`` is ``(H, W)``: the position tables depend on it.

    Position tables are stored one row per position, ``rel_height: (2H-1, key_dim)`` (``(H,
    key_dim)`` when absolute), the transpose of the canonical ``r_height``.
    """

    def __init__(
        self,
        in_channels: int,
        feat_size: tuple[int, int],
        num_heads: int = 4,
        key_dim: int = 128,
        relative: bool = True,
        out_shape: int | None = None,
        out_weight: bool = True,
        out_bias: bool = False,
        attn_dropout: float = 0.0,
    ):
        super().__init__()
        config = checked_config(
            "MHSAWithPositionEmbedding",
            num_heads=num_heads,
            key_dim=key_dim,
            relative=relative,
            out_shape=out_shape,
            out_weight=out_weight,
            out_bias=out_bias,
            attn_dropout=attn_dropout,
        )
        positive_sizes(type(self).__name__, in_channels=in_channels)
        height, width = pair_of_sizes(type(self).__name__, "feat_size", feat_size)
        reference.validate("MHSAWithPositionEmbedding", (1, height, width, in_channels), **config)
        self.in_channels, self.feat_size = in_channels, (height, width)
        self.num_heads, self.key_dim, self.relative = num_heads, key_dim, config["relative"]
        embed_dim = num_heads * key_dim
        out_channels = out_shape if out_weight and out_shape is not None else embed_dim
        self.query = nn.Linear(in_channels, embed_dim, bias=False)
        self.key = nn.Linear(in_channels, embed_dim, bias=False)
        self.value = nn.Linear(in_channels, embed_dim, bias=False)
        self.output = nn.Linear(embed_dim, out_channels, bias=out_bias) if out_weight else None
        self.output_bias = nn.Parameter(torch.zeros(out_channels)) if out_bias and not out_weight else None
        rows = (2 * height - 1, 2 * width - 1) if self.relative else (height, width)
        self.rel_height = nn.Parameter(torch.randn(rows[0], key_dim) * key_dim**-0.5)
        self.rel_width = nn.Parameter(torch.randn(rows[1], key_dim) * key_dim**-0.5)
        self.register_buffer("height_index", relative_index(height), persistent=False)
        self.register_buffer("width_index", relative_index(width), persistent=False)
        self.attn_drop = nn.Dropout(config["attn_dropout"])

    def position_logits(self, query: torch.Tensor) -> torch.Tensor:
        """``query [B, heads, H, W, d]`` -> ``[B, heads, H, W, H, W]``."""
        if self.relative:
            along_height = torch.einsum("bnxyd,xpd->bnxyp", query, self.rel_height[self.height_index])
            along_width = torch.einsum("bnxyd,yqd->bnxyq", query, self.rel_width[self.width_index])
        else:
            along_height = torch.einsum("bnxyd,pd->bnxyp", query, self.rel_height)
            along_width = torch.einsum("bnxyd,qd->bnxyq", query, self.rel_width)
        return along_height[..., :, None] + along_width[..., None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.feat_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, height, width):
            raise ValueError(
                f"MHSAWithPositionEmbedding: inputs shape {tuple(x.shape)} must be [batch, {self.in_channels}, {height}, {width}], "
                "the channels and feat_size this module was built for"
            )
        batch, tokens = x.shape[0], height * width
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]

        def split_heads(projected):  # [B, HW, E] -> [B, heads, HW, key_dim]
            return projected.view(batch, tokens, self.num_heads, self.key_dim).transpose(1, 2)

        query = split_heads(self.query(x)) * self.key_dim**-0.5
        key, value = split_heads(self.key(x)), split_heads(self.value(x))
        logits = query @ key.transpose(-1, -2)
        position = self.position_logits(query.reshape(batch, self.num_heads, height, width, self.key_dim))
        attention = self.attn_drop((logits + position.reshape(logits.shape)).softmax(dim=-1))
        out = (attention @ value).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.key_dim)
        if self.output is not None:
            out = self.output(out)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out.transpose(1, 2).reshape(batch, -1, height, width)

    def canonical_weights(self):
        mapping = {name: Canonical(f"{name}.weight", LINEAR) for name in ("query", "key", "value")}
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
        reference.validate("MHSAWithPositionEmbedding", input_shape, **config)
        _, height, width, channels = input_shape
        return cls(channels, (height, width), **config)


MODULES = {"MHSAWithPositionEmbedding": MHSAWithPositionEmbedding}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["MHSAWithPositionEmbedding"]
