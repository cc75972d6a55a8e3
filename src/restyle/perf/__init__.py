"""Inference benchmark: real architectures with random weights, the original recipe as the baseline."""
