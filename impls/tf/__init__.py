"""Keras 3 (TensorFlow backend) implementations of the canonical layers.

``from impls.tf import attention_layers`` gives the README's namespace.
"""
