"""Examples of adapters for third-party implementations (timm_adapter: timm's PyTorch layers)."""
