"""What N-HiTS and PatchTST share: the training loop, the trained-network artifact, its ONNX
export and native save/load, the instance normalization, and the model adapter.

Training side only (needs the ``[train]`` extra): workers never import this package, they load
the ONNX graphs written by :func:`models.sequence.artifacts.export_onnx` through
``models.scorer``. Each network module (``models.nhits``, ``models.patchtst``) holds only its
architecture and configs, and exposes its :class:`models.sequence.model.SequenceModel`.
"""
