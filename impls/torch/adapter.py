"""The PyTorch implementation, seen through the conformance contract (``conformance.contract``).

Each module builds itself from a canonical config and channels-last input shapes
(``from_canonical``) and maps its parameters to canonical names (``canonical_weights``).
Feature maps are channels-first; the suite converts them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

import reference
from impls.torch import MODULES


class TorchLayer:
    def __init__(self, module):
        self.module = module
        self._initial = module.canonical_state_dict()

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self._initial)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.module.canonical_shapes()

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self.module.load_canonical_state_dict(weights)

    @torch.no_grad()
    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        return self.module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs)).numpy()


class TorchImplementation:
    name = "torch"
    layout = "channels_first"
    dtypes = ("float32", "float64")

    def not_implemented(self) -> dict[str, str]:
        return {name: "no PyTorch module yet" for name in reference.names() if name not in MODULES}

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> TorchLayer:
        # Built in the target dtype, as `torch.set_default_dtype` users do, so that initial values
        # such as weight_init_value=0.1 are not rounded through float32 first.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, dtype))
        try:
            module = MODULES[layer].from_canonical(dict(config), *input_shapes)
        finally:
            torch.set_default_dtype(previous)
        return TorchLayer(module.to(getattr(torch, dtype)).eval())


implementation = TorchImplementation()
