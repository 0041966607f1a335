"""XGBoost and LightGBM: training, reproducibility, ONNX export contract and parity on real data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

from models import lgbm, xgb
from models.dataset import Dataset, build_dataset
from models.fitting import balanced_sample_weights
from models.parity import PARITY_TOLERANCE, check_parity, onnx_probabilities
from models.scorer import load_session

pytestmark = pytest.mark.train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "um_futures_1m_2025"
SMALL = {
    "xgboost": dataclasses.replace(xgb.DEFAULT_CONFIG, n_rounds=40),
    "lightgbm": dataclasses.replace(lgbm.DEFAULT_CONFIG, n_rounds=40),
}
MODULES = {"xgboost": xgb, "lightgbm": lgbm}


@pytest.fixture(scope="module")
def split() -> tuple[Dataset, Dataset]:
    """Three real days of two symbols; the last day (after a purge gap) is the held-back set."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    ds = build_dataset(DATA, ["BTCUSDT", "SOLUSDT"], "2025-05-10", "2025-05-13")
    cut = int(np.datetime64("2025-05-12T00:00", "ms").astype(np.int64))
    gap = ds.label_spec.horizon_bars * 60_000
    return ds.subset(ds.time_ms < cut - gap), ds.subset(ds.time_ms >= cut)


@pytest.fixture(scope="module")
def trained(split: tuple[Dataset, Dataset]) -> dict[str, object]:
    train, val = split
    return {name: mod.train(train, val, SMALL[name], seed=11) for name, mod in MODULES.items()}


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_probabilities_are_a_distribution(name: str, trained: dict, split: tuple) -> None:
    _, val = split
    proba = MODULES[name].predict_proba(trained[name], val.tabular)
    assert proba.dtype == np.float32
    assert proba.shape == (len(val), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # a usable model does not collapse onto one class (the replaced system said SELL 99%)
    assert np.bincount(proba.argmax(1), minlength=3).max() < 0.9 * len(val)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_training_is_reproducible_per_seed(name: str, trained: dict, split: tuple) -> None:
    train, val = split
    mod = MODULES[name]
    again = mod.train(train, val, SMALL[name], seed=11)
    other = mod.train(train, val, SMALL[name], seed=12)
    base = mod.predict_proba(trained[name], val.tabular)
    np.testing.assert_array_equal(mod.predict_proba(again, val.tabular), base)
    assert not np.array_equal(mod.predict_proba(other, val.tabular), base)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_onnx_contract_and_parity(name: str, trained: dict, split: tuple, tmp_path: Path) -> None:
    _, val = split
    mod = MODULES[name]
    path = tmp_path / f"{name}.onnx"
    mod.export_onnx(trained[name], path, val.tabular.shape[1])
    session = load_session(path)
    assert [i.name for i in session.get_inputs()] == ["tabular"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch dimension
    result = check_parity(name, lambda x: mod.predict_proba(trained[name], x), path, val.tabular)
    assert result.n_rows == len(val)
    assert result.max_abs_diff <= PARITY_TOLERANCE
    assert result.argmax_agreement == 1.0
    # batch size does not change the answer: one row at a time equals the batch
    one = np.concatenate([onnx_probabilities(path, val.tabular[i : i + 1]) for i in range(50)])
    np.testing.assert_allclose(one, onnx_probabilities(path, val.tabular[:50]), atol=1e-7)


def _thresholds(booster: object) -> list[tuple[int, float]]:
    """(feature, threshold) of every numeric split of a LightGBM model."""
    out = []
    for tree in booster.dump_model()["tree_info"]:  # type: ignore[attr-defined]
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node:
                out.append((node["split_feature"], float(node["threshold"])))
                stack += [node["left_child"], node["right_child"]]
    return out


def test_lightgbm_thresholds_are_float32_exact_and_native_output_unchanged(
    split: tuple, tmp_path: Path
) -> None:
    """Rows placed exactly on the float32 neighbours of split thresholds: the worst case of
    pitfall 5 (without the rounding, ONNX differs by 0.136 on these rows). The rounded native
    model must equal the original on float32 inputs, and ONNX must match it."""
    import lightgbm as lgb

    train, val = split
    x = train.tabular
    raw = lgb.train(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 15, "verbosity": -1,
         "num_threads": 1, "seed": 3, "deterministic": True},
        lgb.Dataset(x, label=train.y),
        num_boost_round=20,
    )  # fmt: skip
    fixed = lgbm.float32_exact(raw)
    splits = _thresholds(fixed)
    assert splits and all(float(np.float32(t)) == t for _, t in splits)
    # adversarial rows: each split feature set to float32 values at / around the raw threshold
    rows = []
    for feat, t in _thresholds(raw)[:200]:
        t32 = np.float32(t)
        for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-1e9))):
            row = val.tabular[len(rows) % len(val)].copy()
            row[feat] = v
            rows.append(row)
    adv = np.asarray(rows, dtype=np.float32)
    np.testing.assert_array_equal(lgbm.predict_proba(fixed, adv), lgbm.predict_proba(raw, adv))
    path = tmp_path / "lgbm.onnx"
    lgbm.export_onnx(fixed, path, x.shape[1])
    check_parity("lightgbm", lambda a: lgbm.predict_proba(fixed, a), path, adv)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_native_save_load_round_trip(
    name: str, trained: dict, split: tuple, tmp_path: Path
) -> None:
    _, val = split
    mod = MODULES[name]
    path = tmp_path / f"native{mod.NATIVE_SUFFIX}"
    mod.save_native(trained[name], path)
    loaded = mod.load_native(path)
    np.testing.assert_array_equal(
        mod.predict_proba(loaded, val.tabular), mod.predict_proba(trained[name], val.tabular)
    )


def test_balanced_weights_give_each_class_equal_total_weight(split: tuple) -> None:
    train, _ = split
    w = balanced_sample_weights(train.y, 3)
    totals = np.bincount(train.y, weights=w, minlength=3)
    np.testing.assert_allclose(totals, len(train.y) / 3, rtol=1e-5)
    assert np.bincount(train.y, minlength=3).std() > 0  # real labels are not already balanced


def test_classification_metrics_hand_computed() -> None:
    from models.metrics import classification_metrics

    y = np.array([0, 0, 1, 2, 2, 2])
    # predictions: 0, 1, 1, 2, 2, 0
    proba = np.array(
        [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
         [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]], dtype=np.float32,
    )  # fmt: skip
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recall per class: SELL 1/2, HOLD 1/1, BUY 2/3
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["precision"] == pytest.approx([0.5, 0.5, 1.0])
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * 0.5 * 1 / 1.5, 2 * 1 * (2 / 3) / (5 / 3)]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    # balances are rounded to 6 decimals for the manifest
    assert m["prediction_balance"] == pytest.approx([2 / 6, 2 / 6, 2 / 6], abs=1e-6)
    assert m["label_balance"] == pytest.approx([2 / 6, 1 / 6, 3 / 6], abs=1e-6)
    expected_ll = -np.mean(np.log([0.6, 0.2, 0.8, 0.7, 0.6, 0.4]))
    assert m["log_loss"] == pytest.approx(expected_ll, rel=1e-6)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
