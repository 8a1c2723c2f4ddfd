"""PyTorch implementations of the canonical layers, in PyTorch's own conventions: feature maps
are ``[B, C, H, W]``, token sequences ``[B, N, C]``, dense weights are ``nn.Linear`` layouts.
Every module maps its parameters to the canonical names and layouts through
``canonical_weights()`` (see ``impls.torch._mapping``)."""

from impls.torch.botnet import MHSAWithPositionEmbedding
from impls.torch.mlp_mixer import MlpBlock
from impls.torch.res_mlp import ChannelAffine
from impls.torch.volo import BiasLayer

__all__ = ["BiasLayer", "ChannelAffine", "MHSAWithPositionEmbedding", "MlpBlock"]
