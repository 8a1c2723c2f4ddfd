"""Collects the layer declarations from the family modules.

A family module (``reference/botnet.py`` and so on) exposes ``SPECS``, a tuple of
:class:`~reference._spec.LayerSpec`. Layers are listed in the order of the user's README:
family by family, then in declaration order. A new family only needs its module.
"""

from __future__ import annotations

import importlib
import importlib.util

from reference._errors import DomainError
from reference._spec import LayerSpec

README_FAMILY_ORDER = (
    "aotnet",
    "botnet",
    "cotnet",
    "coat",
    "halonet",
    "resnest",
    "volo",
    "mlp_mixer",
    "res_mlp",
    "gated_mlp",
)

_SPECS: dict[str, LayerSpec] = {}


def _load() -> dict[str, LayerSpec]:
    if _SPECS:
        return _SPECS
    for family in README_FAMILY_ORDER:
        module_name = f"reference.{family}"
        if importlib.util.find_spec(module_name) is None:
            continue
        for layer_spec in importlib.import_module(module_name).SPECS:
            if layer_spec.family != family:
                raise RuntimeError(f"{layer_spec.name} is declared in {family} but says {layer_spec.family}")
            if layer_spec.name in _SPECS:
                raise RuntimeError(f"{layer_spec.name} is declared twice")
            _SPECS[layer_spec.name] = layer_spec
    return _SPECS


def all_specs() -> dict[str, LayerSpec]:
    return dict(_load())


def get(name: str) -> LayerSpec:
    specs = _load()
    if name not in specs:
        raise DomainError(f"unknown layer {name!r}; the layers are: {', '.join(specs)}")
    return specs[name]
