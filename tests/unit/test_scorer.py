"""The ONNX scorer: only ONNX Runtime at run time, single-thread sessions, checked inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.features import FEATURE_VERSION
from models.registry import read_index
from models.scorer import EnsembleScorer, ScorerError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "binance" / "um_futures_1m_2025"
BUNDLED = REPO / "models" / "registry"
FORBIDDEN = ("torch", "xgboost", "lightgbm", "sklearn", "onnxmltools", "skl2onnx", "onnx")

_SCORE_IN_CLEAN_PROCESS = """
import json, sys
import numpy as np
from models.dataset import build_dataset
from models.scorer import EnsembleScorer
registry, data = sys.argv[1], sys.argv[2]
scorer = EnsembleScorer.from_registry(registry)
ds = build_dataset(data, ["SOLUSDT"], "2025-05-21T00:00", "2025-05-21T06:00")
probs = scorer.score(ds.tabular, ds.window)
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN_TUPLE),
    "versions": scorer.versions,
    "rows": {k: list(v.shape) for k, v in probs.items()},
    "sums_ok": all(bool(np.allclose(v.sum(1), 1, atol=1e-5)) for v in probs.values()),
}))
""".replace("FORBIDDEN_TUPLE", repr(FORBIDDEN))


@pytest.fixture(scope="module")
def gbdt_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GBDT-only registry trained by the real orchestrator on real data."""
    pytest.importorskip("xgboost")
    pytest.importorskip("lightgbm")
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    from models.train import TrainPlan, run

    reg = tmp_path_factory.mktemp("registry")
    plan = TrainPlan(
        data_dir=DATA, registry=reg, version="v1", models=("xgboost", "lightgbm"),
        symbols=("SOLUSDT",), start="2025-05-12", end="2025-05-14", n_folds=0,
        config_overrides={"xgboost": {"n_rounds": 10}, "lightgbm": {"n_rounds": 10}},
    )  # fmt: skip
    run(plan, log=lambda _msg: None)
    return reg


def _score_in_subprocess(registry: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCORE_IN_CLEAN_PROCESS, str(registry), str(DATA)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scoring_loads_only_onnxruntime(gbdt_registry: Path) -> None:
    report = _score_in_subprocess(gbdt_registry)
    assert report["loaded"] == []
    assert report["versions"] == {"lightgbm": "v1", "xgboost": "v1"}
    assert report["rows"]["xgboost"][1] == 3 and report["rows"]["xgboost"][0] > 100
    assert report["sums_ok"]


@pytest.mark.skipif(not (BUNDLED / "index.json").is_file(), reason="no bundled registry yet")
def test_bundled_registry_scores_all_models_without_training_libraries() -> None:
    report = _score_in_subprocess(BUNDLED)
    assert report["loaded"] == []
    assert set(report["versions"]) == set(read_index(BUNDLED))
    assert {"xgboost", "lightgbm", "nhits", "patchtst"} <= set(report["versions"])
    assert report["sums_ok"]


def test_sessions_are_single_threaded_and_sequential(gbdt_registry: Path) -> None:
    import onnxruntime as ort

    scorer = EnsembleScorer.from_registry(gbdt_registry)
    for member in scorer._members:
        opts = member.session.get_session_options()
        assert opts.intra_op_num_threads == 1
        assert opts.inter_op_num_threads == 1
        assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_batch_equals_row_by_row_and_inputs_are_checked(gbdt_registry: Path) -> None:
    from models.dataset import build_dataset

    scorer = EnsembleScorer.from_registry(gbdt_registry, expected_feature_version=FEATURE_VERSION)
    ds = build_dataset(DATA, ["BTCUSDT"], "2025-05-21T00:00", "2025-05-21T02:00")
    batch = scorer.score(ds.tabular, None)
    for i in range(0, len(ds), 17):
        one = scorer.score(ds.tabular[i : i + 1], None)
        for name in scorer.names:
            np.testing.assert_allclose(one[name][0], batch[name][i], atol=1e-6)
    # float64 input is converted, not rejected; wrong widths and missing inputs are
    batch64 = scorer.score(ds.tabular.astype(np.float64), None)
    np.testing.assert_array_equal(batch64["xgboost"], batch["xgboost"])
    with pytest.raises(ScorerError, match="expects"):
        scorer.score(ds.tabular[:, :-1], None)
    with pytest.raises(ScorerError, match="needs a 'tabular'"):
        scorer.score(None, ds.window)


def test_feature_version_mismatch_is_refused(gbdt_registry: Path) -> None:
    with pytest.raises(ScorerError, match="feature version"):
        EnsembleScorer.from_registry(gbdt_registry, expected_feature_version="f0-old")


def test_empty_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match="nothing promoted"):
        EnsembleScorer.from_registry(tmp_path)


def test_scores_do_not_depend_on_how_rows_are_batched() -> None:
    """A Kafka replay batches records as they arrive; a row's scores must not depend on it.

    Real windows of the bundled sample, through the promoted sessions: every row must get the
    same bits alone, in batches of 1 to 13 rows, across the scorer's 256-row chunks, in reverse
    and in a shuffled order (other neighbours, other positions). Unpadded, ONNX Runtime gives
    some rows other last bits in calls of 1-3 or 4k+2, 4k+3 rows (models/scorer.py).
    """
    from models.dataset import build_dataset
    from streams.config import PROJECT_ROOT

    scorer = EnsembleScorer.from_registry(PROJECT_ROOT / "models" / "registry")
    ds = build_dataset(
        PROJECT_ROOT / "data" / "sample" / "um_futures_1m_2025",
        ["BTCUSDT", "SOLUSDT", "XRPUSDT"], "2025-05-22T00:00", "2025-05-22T02:00",
    )  # fmt: skip
    tab, win = ds.tabular[:300], ds.window[:300]
    assert len(tab) == 300
    whole = scorer.score(tab, win)

    def assert_same(got: dict[str, np.ndarray], order: np.ndarray, how: str) -> None:
        for name, expected in whole.items():
            same = np.array_equal(got[name].view(np.uint32), expected[order].view(np.uint32))
            assert same, f"{name}: other bits {how}"

    for size in (*range(1, 14), 255, 257):
        parts = [scorer.score(tab[i : i + size], win[i : i + size]) for i in range(0, 300, size)]
        got = {name: np.concatenate([p[name] for p in parts]) for name in whole}
        assert_same(got, np.arange(300), f"in batches of {size}")
    rng = np.random.default_rng(7)
    for order in (np.arange(300)[::-1], rng.permutation(300)):
        assert_same(scorer.score(tab[order], win[order]), order, "in another order")
