"""ONNX Runtime scorer for the model ensemble — the only model code a worker runs.

Imports numpy, onnxruntime and the stdlib registry only (a test asserts that torch, xgboost,
lightgbm and sklearn stay out of ``sys.modules``). Sessions are built once, each on one thread
with sequential execution: on a shared 2-core box, thread pools that spin cost far more than
they give back (a 19 ms median was measured with default options).

Usage::

    scorer = EnsembleScorer.from_registry(settings.registry_dir)       # promoted versions
    probs = scorer.score(tabular, window)      # {"xgboost": (N,3), "lightgbm": (N,3), ...}
    scorer.versions                            # {"xgboost": "v1", ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.registry import RegisteredModel, read_index, resolve

OUTPUT_NAME = "probabilities"
INPUT_KINDS = ("tabular", "window")
#: A replay must not depend on how Kafka happened to batch records, so a network's output for a
#: row must not depend on the rows it was scored with. ONNX Runtime's MatMul kernels work on
#: blocks of rows: a call of 1 to 3 rows, or of 4k+2 or 4k+3 rows, gives some rows different
#: last bits (up to 2.4e-7) than a call of a whole multiple of 4 rows, while every multiple of
#: 4 (4 to 400) gives the same bits for a row at any position with any neighbours (measured on
#: real windows, docs/performance.md; tests/unit/test_scorer.py checks it on
#: the machine it runs on). So networks get whole multiples of 4 rows, padded with zeros.
NETWORK_ROW_MULTIPLE = 4
#: Rows per network call at most (bounds a call's memory; a multiple of the above).
NETWORK_BATCH_ROWS = 256


class ScorerError(RuntimeError):
    """The ensemble cannot be built or an input does not match what the models expect."""


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, sequential, full graph optimisation, no spinning."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def load_session(path: Path) -> ort.InferenceSession:
    """A CPU inference session for one ONNX file, built with :func:`session_options`."""
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        raise ScorerError(f"cannot load ONNX model {path}: {exc}") from exc


@dataclass(frozen=True)
class _Member:
    """One loaded model: its session, what it eats and its expected per-row input shape."""

    name: str
    version: str
    kind: str  # "tabular" | "window"
    row_shape: tuple[int, ...]
    session: ort.InferenceSession


def _member(model: RegisteredModel) -> _Member:
    manifest = model.manifest
    if manifest.input not in INPUT_KINDS:
        raise ScorerError(f"{model.name} {model.version}: unknown input kind {manifest.input!r}")
    session = load_session(model.onnx_path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [manifest.input] or outputs != [OUTPUT_NAME]:
        raise ScorerError(
            f"{model.name} {model.version}: graph has inputs {inputs} / outputs {outputs}, "
            f"expected [{manifest.input!r}] / [{OUTPUT_NAME!r}]"
        )
    row_shape = tuple(int(d) for d in manifest.input_shape[1:] if d is not None)
    return _Member(model.name, model.version, manifest.input, row_shape, session)


class EnsembleScorer:
    """Scores a batch of feature rows with every loaded model (weighting is the agent's job)."""

    def __init__(self, models: Iterable[RegisteredModel]) -> None:
        members = [_member(m) for m in models]
        if not members:
            raise ScorerError("no models to score with")
        versions = {m.manifest.feature_version for m in models}
        if len(versions) > 1:
            raise ScorerError(f"models were trained on different feature versions: {versions}")
        self._members = members
        self.feature_version: str = versions.pop()

    @classmethod
    def from_registry(
        cls,
        registry: Path | str,
        versions: Mapping[str, str] | None = None,
        expected_feature_version: str | None = None,
    ) -> EnsembleScorer:
        """Load ``versions`` (model -> version), or every promoted model when None.

        Each artifact's sha256 is verified against its manifest before a session is built;
        a mismatch raises :class:`models.registry.ArtifactIntegrityError`.
        """
        registry = Path(registry)
        wanted = dict(versions) if versions is not None else read_index(registry)
        if not wanted:
            raise ScorerError(f"nothing promoted in {registry}; run `quantum-trader models train`")
        # RegistryError / ArtifactIntegrityError propagate as they are: they name the artifact.
        loaded = [resolve(registry, name, version) for name, version in sorted(wanted.items())]
        scorer = cls(loaded)
        if expected_feature_version and scorer.feature_version != expected_feature_version:
            raise ScorerError(
                f"models use feature version {scorer.feature_version}, the running feature "
                f"code is {expected_feature_version}; retrain or pin matching versions"
            )
        return scorer

    @property
    def versions(self) -> dict[str, str]:
        """Loaded version per model name."""
        return {m.name: m.version for m in self._members}

    @property
    def names(self) -> tuple[str, ...]:
        """Loaded model names, in scoring order."""
        return tuple(m.name for m in self._members)

    def score(self, tabular: np.ndarray | None, window: np.ndarray | None) -> dict[str, np.ndarray]:
        """Probabilities (N, 3) float32 per model for N rows of features.

        ``tabular`` (N, F) feeds the GBDTs, ``window`` (N, W, 5) the sequence models; either may
        be None when no loaded model needs it.
        """
        feeds = {"tabular": tabular, "window": window}
        out: dict[str, np.ndarray] = {}
        for m in self._members:
            x = _checked_input(m, feeds[m.kind])
            if m.kind == "window":
                out[m.name] = _run_padded(m.session, m.kind, x)
            else:  # tree ensembles are exact at any batch size
                out[m.name] = m.session.run([OUTPUT_NAME], {m.kind: x})[0]
        return out


def _run_padded(session: ort.InferenceSession, input_name: str, x: np.ndarray) -> np.ndarray:
    """A network's outputs for ``x``, fed in chunks of :data:`NETWORK_BATCH_ROWS` rows.

    The last chunk is padded with zero rows, so every call has a whole multiple of
    :data:`NETWORK_ROW_MULTIPLE` rows and a row's bits do not depend on its batch.
    """
    if not len(x):
        return session.run([OUTPUT_NAME], {input_name: x})[0]
    outs = []
    for start in range(0, len(x), NETWORK_BATCH_ROWS):
        chunk = x[start : start + NETWORK_BATCH_ROWS]
        short = -len(chunk) % NETWORK_ROW_MULTIPLE
        if short:
            chunk = np.concatenate([chunk, np.zeros((short, *x.shape[1:]), dtype=x.dtype)])
        outs.append(session.run([OUTPUT_NAME], {input_name: chunk})[0][: len(chunk) - short])
    return outs[0] if len(outs) == 1 else np.concatenate(outs)


def _checked_input(member: _Member, x: np.ndarray | None) -> np.ndarray:
    """The input as contiguous float32, or a :class:`ScorerError` naming the mismatch."""
    if x is None:
        raise ScorerError(f"{member.name} needs a {member.kind!r} input, got None")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1:] != member.row_shape:
        raise ScorerError(
            f"{member.name} {member.version}: {member.kind} rows of shape {x.shape[1:]}, "
            f"model expects {member.row_shape}"
        )
    return x


def promoted_versions(registry: Path) -> dict[str, str]:
    """Promoted version per model (re-exported for the ensemble agent)."""
    return read_index(registry)
