"""ONNX export finishing and the native-vs-ONNX parity check.

Every exported model has one float32 input (``tabular`` or ``window``) and exactly one output,
``probabilities`` (N, 3) in ``CLASSES`` order. :func:`check_parity` scores held-back rows with
the native model and with ONNX Runtime (same single-thread session options as the workers) and
fails above :data:`PARITY_TOLERANCE`.

``onnx`` is imported lazily: this module is used at training time only, but the scorer side
(:mod:`models.scorer`) must stay importable with onnxruntime alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PARITY_TOLERANCE = 1e-4
OUTPUT_NAME = "probabilities"


class ExportError(RuntimeError):
    """The converter produced a graph that does not meet the model contract."""


class ParityError(RuntimeError):
    """ONNX and native probabilities differ by more than the tolerance."""

    def __init__(self, model: str, result: ParityResult) -> None:
        super().__init__(
            f"{model}: ONNX vs native max |dp| = {result.max_abs_diff:.3g} on "
            f"{result.n_rows} held-back rows (row {result.worst_row}) exceeds "
            f"{result.tolerance:g}; the ONNX file must not be registered"
        )
        self.model = model
        self.result = result


@dataclass(frozen=True)
class ParityResult:
    """Outcome of one parity check (written to the manifest)."""

    max_abs_diff: float
    mean_abs_diff: float
    worst_row: int
    n_rows: int
    tolerance: float
    argmax_agreement: float

    @property
    def passed(self) -> bool:
        """True when the worst difference is within tolerance."""
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return {
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "worst_row": self.worst_row,
            "n_rows": self.n_rows,
            "tolerance": self.tolerance,
            "argmax_agreement": self.argmax_agreement,
            "passed": self.passed,
        }


def require_float32_2d(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 matrix; raises ``ValueError`` naming ``what`` otherwise."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (N, F) feature matrix, got shape {arr.shape}")
    return arr


def finalize_onnx_probabilities(model: Any, path: Path, producer: str) -> None:
    """Keep only the probability output, name it ``probabilities``, check and save the graph.

    GBDT converters emit ``label`` and ``probabilities``; workers want the latter only. The
    dangling label output of the tree node is harmless (computed from the same traversal).
    """
    import onnx

    graph = model.graph
    candidates = [o for o in graph.output if "prob" in o.name.lower()]
    if len(candidates) != 1:
        names = [o.name for o in graph.output]
        raise ExportError(f"{producer}: cannot find one probability output among {names}")
    keep = candidates[0]
    if keep.name != OUTPUT_NAME:
        _rename_tensor(graph, keep.name, OUTPUT_NAME)
    for out in [o for o in graph.output if o.name != OUTPUT_NAME]:
        graph.output.remove(out)
    model.doc_string = f"quantum-trader {producer}: input -> probabilities (N,3) SELL/HOLD/BUY"
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    """Rename a tensor everywhere it is produced, consumed or declared as a graph output."""
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    for out in graph.output:
        if out.name == old:
            out.name = new


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """Score ``x`` with a single-thread ONNX Runtime session built like the workers' sessions."""
    from models.scorer import load_session

    session = load_session(path)
    input_name = session.get_inputs()[0].name
    (proba,) = session.run([OUTPUT_NAME], {input_name: np.ascontiguousarray(x, np.float32)})
    return np.asarray(proba, dtype=np.float32)


def compare(native: np.ndarray, onnx_out: np.ndarray, tolerance: float) -> ParityResult:
    """Pure comparison of two (N, 3) probability matrices."""
    if native.shape != onnx_out.shape:
        raise ExportError(f"shape mismatch: native {native.shape} vs onnx {onnx_out.shape}")
    diff = np.abs(native.astype(np.float64) - onnx_out.astype(np.float64))
    per_row = diff.max(axis=1) if diff.size else np.zeros(0)
    return ParityResult(
        max_abs_diff=float(per_row.max()) if per_row.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        worst_row=int(per_row.argmax()) if per_row.size else -1,
        n_rows=int(native.shape[0]),
        tolerance=tolerance,
        argmax_agreement=float((native.argmax(1) == onnx_out.argmax(1)).mean())
        if per_row.size
        else 1.0,
    )


def check_parity(
    model: str,
    native_predict: Callable[[np.ndarray], np.ndarray],
    onnx_path: Path,
    x_heldback: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityResult:
    """Native vs ONNX probabilities on held-back rows; :class:`ParityError` above tolerance."""
    if len(x_heldback) == 0:
        raise ExportError(f"{model}: no held-back rows to check parity on")
    result = compare(
        native_predict(x_heldback), onnx_probabilities(onnx_path, x_heldback), tolerance
    )
    if not result.passed:
        raise ParityError(model, result)
    return result
