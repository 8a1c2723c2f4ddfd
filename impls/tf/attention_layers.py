"""The README's ``attention_layers`` namespace, in Keras 3.

Replace ``from keras_cv_attention_models import attention_layers`` with
``from impls.tf import attention_layers`` and the README's examples run with the same results,
given the ``tensorflow`` and ``keras`` imports the README leaves out, with two differences on
purpose: Keras 3 prints variable paths without the ``<layer name>/`` prefix and ``:0`` suffix, and
``outlook_attention(inputs, 4, 192)`` (embed_dim 4 below num_head 192, the README's positional
slip) is refused with a message naming the swap (docs/decisions.md).

Each family module (``impls/tf/<family>.py``, named as in ``reference/``) lists its public layers
and blocks in ``__all__``; this namespace gathers them in the README's family order, so a new
family needs no edit here.
"""

from __future__ import annotations

import importlib
import importlib.util

from reference._registry import README_FAMILY_ORDER

__all__: list[str] = []

for _family in README_FAMILY_ORDER:
    if importlib.util.find_spec(f"impls.tf.{_family}") is None:
        continue
    _module = importlib.import_module(f"impls.tf.{_family}")
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
