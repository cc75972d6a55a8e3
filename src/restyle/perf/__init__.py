"""Benchmarks whose figures go to docs/PERFORMANCE.md.

Inference (cases, report): real architectures with random weights, the original recipe as the baseline.
Fine-tuning (training): the reference configuration, each run in its own process. Both write their
tables into their own sections of the document (sections).
"""
