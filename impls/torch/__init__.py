"""PyTorch implementations of the canonical layers, in PyTorch's own conventions: feature maps
are ``[B, C, H, W]``, token sequences ``[B, N, C]``, dense weights are ``nn.Linear`` layouts.
Every module maps its parameters to the canonical names and layouts through
``canonical_weights()`` (see ``impls.torch._mapping``).

Each family module (``impls/torch/<family>.py``, named as in ``reference/``) exports its modules
in ``__all__`` and maps canonical layer names to them in ``MODULES``; this package gathers both in
the README's family order, so a new family needs no edit here.
"""

from __future__ import annotations

import importlib
import importlib.util

from reference._registry import README_FAMILY_ORDER

__all__: list[str] = []
MODULES: dict[str, type] = {}
"""Canonical layer name -> module class with ``from_canonical(config, *input_shapes)``."""

for _family in README_FAMILY_ORDER:
    if importlib.util.find_spec(f"impls.torch.{_family}") is None:
        continue
    _module = importlib.import_module(f"impls.torch.{_family}")
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
    MODULES.update(_module.MODULES)
