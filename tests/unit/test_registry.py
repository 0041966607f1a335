"""Registry round trip on real data: train -> export -> register -> load by version -> score.

Uses the real orchestrator (:func:`models.train.run`) on a small slice of um_futures_1m_2025 with
small GBDT configs, so the manifest, ranges, parity and promotion are the ones a real run writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")

from models import lgbm, xgb
from models.dataset import build_dataset, to_ms
from models.registry import (
    ArtifactIntegrityError,
    Manifest,
    RegistryError,
    list_versions,
    next_version,
    promote,
    read_index,
    read_manifest,
    register,
    resolve,
    sha256_file,
)
from models.scorer import EnsembleScorer
from models.train import TrainPlan, run

pytestmark = pytest.mark.train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "um_futures_1m_2025"
START, END = "2025-05-10T00:00", "2025-05-13T00:00"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding v1 of both GBDTs, trained by the real orchestrator."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    reg = tmp_path_factory.mktemp("registry")
    plan = TrainPlan(
        data_dir=DATA,
        registry=reg,
        version="v1",
        models=("xgboost", "lightgbm"),
        symbols=SYMBOLS,
        start=START,
        end=END,
        n_folds=2,
        config_overrides={"xgboost": {"n_rounds": 30}, "lightgbm": {"n_rounds": 30}},
    )
    outcomes = run(plan, log=lambda _msg: None)
    assert [o.name for o in outcomes] == ["xgboost", "lightgbm"]
    return reg


def _heldback_rows(manifest: Manifest) -> np.ndarray:
    rng = manifest.validation_range
    ds = build_dataset(DATA, list(SYMBOLS), rng["first_ms"], rng["last_ms"] + 60_000)
    return ds.tabular


@pytest.mark.parametrize(("name", "module"), [("xgboost", xgb), ("lightgbm", lgbm)])
def test_round_trip_scores_equal_native(name: str, module: object, registry: Path) -> None:
    registered = resolve(registry, name, "v1")
    native = module.load_native(registered.onnx_path.parent / registered.manifest.native_file)  # type: ignore[attr-defined]
    x = _heldback_rows(registered.manifest)
    scorer = EnsembleScorer.from_registry(registry, versions={name: "v1"})
    got = scorer.score(x, None)[name]
    np.testing.assert_allclose(got, module.predict_proba(native, x), atol=1e-4)  # type: ignore[attr-defined]
    assert scorer.versions == {name: "v1"}


def test_manifest_states_data_ranges_and_parity(registry: Path) -> None:
    m = read_manifest(registry, "xgboost", "v1")
    assert m.sha256 == sha256_file(registry / "xgboost" / "v1" / "model.onnx")
    assert m.input == "tabular" and m.input_shape == [None, len(m.feature_names)]
    assert m.classes == ["SELL", "HOLD", "BUY"]
    assert m.data_source["dataset"] == "um_futures_1m_2025"
    assert m.data_source["symbols"] == list(SYMBOLS)
    # held-back block strictly after the training block plus the purge gap, both inside the
    # requested range, so neither touches the evaluation window
    gap_ms = m.label["horizon_bars"] * 60_000
    assert m.train_range["last_ms"] + gap_ms < m.validation_range["first_ms"]
    assert to_ms(START) <= m.train_range["first_ms"]
    assert m.validation_range["last_ms"] + gap_ms < to_ms(END)
    assert m.parity["passed"] and m.parity["max_abs_diff"] <= 1e-4
    folds = m.metrics["walk_forward"]["folds"]
    assert len(folds) == 2
    for fold in folds:
        assert fold["train_range"]["last_ms"] + gap_ms < fold["validation_range"]["first_ms"]
        assert fold["validation_range"]["last_ms"] < m.validation_range["first_ms"]
    assert abs(sum(m.metrics["holdout"]["prediction_balance"]) - 1) < 1e-5


def test_train_promotes_and_index_drives_default_loading(registry: Path) -> None:
    assert read_index(registry) == {"lightgbm": "v1", "xgboost": "v1"}
    scorer = EnsembleScorer.from_registry(registry)
    assert scorer.versions == {"lightgbm": "v1", "xgboost": "v1"}


def test_new_version_promote_and_rollback(registry: Path, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    src = resolve(reg, "xgboost", "v1")
    assert next_version(reg) == "v2"
    manifest = Manifest(**{**json.loads(src.manifest.to_json()), "version": "v2", "sha256": ""})
    register(reg, manifest, src.onnx_path)
    assert list_versions(reg, "xgboost") == ["v1", "v2"]
    assert read_index(reg)["xgboost"] == "v1"  # registering does not promote
    promote(reg, "xgboost", "v2")
    assert resolve(reg, "xgboost").version == "v2"
    promote(reg, "xgboost", "v1")
    assert resolve(reg, "xgboost").version == "v1"
    with pytest.raises(RegistryError, match="already exists"):
        register(reg, manifest, src.onnx_path)
    with pytest.raises(RegistryError, match="not registered"):
        promote(reg, "xgboost", "v9")


def test_corrupt_artifact_is_refused_with_a_clear_error(registry: Path, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    onnx_path = reg / "lightgbm" / "v1" / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"lightgbm v1: .*sha256"):
        resolve(reg, "lightgbm", "v1")
    with pytest.raises(ArtifactIntegrityError):
        EnsembleScorer.from_registry(reg)
    with pytest.raises(ArtifactIntegrityError):
        promote(reg, "lightgbm", "v1")
    onnx_path.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        resolve(reg, "lightgbm", "v1")


def test_bad_manifest_and_names_are_registry_errors(registry: Path, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    (reg / "xgboost" / "v1" / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RegistryError, match="not a valid manifest"):
        read_manifest(reg, "xgboost", "v1")
    with pytest.raises(RegistryError, match="invalid version"):
        read_manifest(reg, "xgboost", "../lightgbm/v1")
    (reg / "index.json").write_text('{"promoted": 3}', encoding="utf-8")
    with pytest.raises(RegistryError, match="must map"):
        read_index(reg)


def test_cli_list_and_promote(registry: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.commands.models_cmd import app

    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--registry", str(reg)])
    assert listed.exit_code == 0, listed.output
    assert "xgboost" in listed.output and "lightgbm" in listed.output
    bad = runner.invoke(app, ["promote", "xgboost", "v7", "--registry", str(reg)])
    assert bad.exit_code == 1
    assert "error:" in bad.output and "not registered" in bad.output
    ok = runner.invoke(app, ["promote", "xgboost", "v1", "--registry", str(reg)])
    assert ok.exit_code == 0, ok.output
    assert read_index(reg)["xgboost"] == "v1"


def test_reexport_from_kept_native_matches_registered(registry: Path, tmp_path: Path) -> None:
    from models.parity import onnx_probabilities
    from models.reexport import reexport

    out = tmp_path / "again.onnx"
    result = reexport(registry, "lightgbm", "v1", out, DATA)
    assert result.passed and result.n_rows > 100
    x = _heldback_rows(read_manifest(registry, "lightgbm", "v1"))
    registered = resolve(registry, "lightgbm", "v1").onnx_path
    np.testing.assert_allclose(
        onnx_probabilities(out, x), onnx_probabilities(registered, x), atol=1e-6
    )
