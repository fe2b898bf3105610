"""Pretrained image models built from Keras 3 layers, and the helpers that load their weights."""
