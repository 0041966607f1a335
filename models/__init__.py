"""Offline side: features, datasets, training, walk-forward evaluation, ONNX export, registry, scorer.

Modules imported by workers (features, registry, scorer) depend only on numpy and onnxruntime.
"""
