"""Offline side: features, datasets, walk-forward training and evaluation, ONNX, registry, scorer.

Modules imported by workers (features, rolling_moments, registry, scorer) depend only on numpy
and onnxruntime. The rest, by job:

* data: ``dataset`` (labels, rows, walk-forward folds), ``sampling`` (purged tail blocks,
  seeded row samples);
* the four models: ``xgb``, ``lgbm``, ``nhits``, ``patchtst`` (the last two on ``sequence/``,
  the code they share), listed by ``catalog``; ``fitting`` holds what every fit shares;
* training: ``train`` (the run), ``parity`` (ONNX vs native), ``reexport`` (``models export``),
  ``metrics`` (scores against labels, shared with the evaluation);
* ``evaluation/`` (the held-out report) and ``studies/`` (the sequence-model sizing study).
"""
