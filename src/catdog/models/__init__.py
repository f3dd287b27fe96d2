"""Models: builders, EfficientNet-Lite and its checkpoint reader, pretrained weights, the pet detector, layers."""
