"""Offline side: features, datasets, walk-forward training and evaluation, ONNX, registry, scorer.

Modules imported by workers (features, registry, scorer) depend only on numpy and onnxruntime.
"""
