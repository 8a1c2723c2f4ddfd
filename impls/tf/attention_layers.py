"""The README's ``attention_layers`` namespace, in Keras 3.

Replace ``from keras_cv_attention_models import attention_layers`` with
``from impls.tf import attention_layers`` and the README's examples run unchanged.
"""

from impls.tf.botnet import MHSAWithPositionEmbedding
from impls.tf.mlp_mixer import mlp_block
from impls.tf.res_mlp import ChannelAffine
from impls.tf.volo import BiasLayer

__all__ = ["BiasLayer", "ChannelAffine", "MHSAWithPositionEmbedding", "mlp_block"]
