"""Implementations of the canonical layers: ``impls.tf`` (Keras 3) and ``impls.torch`` (PyTorch)."""
