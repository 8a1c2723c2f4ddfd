"""Files: golden fixtures and weight conversion between Keras, PyTorch and canonical safetensors."""
