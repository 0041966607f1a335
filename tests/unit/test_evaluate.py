"""The evaluation report: metric definitions by hand, the trading rule by hand, and an end-to-end
report on the real held-out window scored through the real registry + ONNX Runtime scorer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.dataset import BUY, HOLD, SELL, LabelSpec, build_dataset, load_klines
from models.evaluation.predictors import baseline_predictions, runtime_ensemble
from models.evaluation.report import write_report
from models.evaluation.scoring import EvaluationError
from models.evaluation.trading import _symbol_pnl, horizon_trade_returns, next_bar_returns
from models.features import BAR_MS, FEATURE_NAMES, FEATURE_VERSION, WINDOW
from models.metrics import calibration
from models.metrics import prediction_metrics as classification_metrics
from models.registry import Manifest, promote, register
from tests.shared_data import BINANCE

FUT = BINANCE / "um_futures_1m_2025"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


# ------------------------------------------------------------------------ definitions by hand


def test_classification_metrics_by_hand() -> None:
    y = np.array([SELL, SELL, HOLD, HOLD, BUY, BUY])
    pred = np.array([SELL, HOLD, HOLD, HOLD, SELL, BUY])
    m = classification_metrics(y, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # recall SELL 1/2, HOLD 2/2, BUY 1/2 -> balanced 2/3; precision SELL 1/2, HOLD 2/3, BUY 1/1
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"]["HOLD"]["precision"] == pytest.approx(2 / 3)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["prediction_balance"] == pytest.approx({"SELL": 2 / 6, "HOLD": 3 / 6, "BUY": 1 / 6})
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["log_loss"] is None
    proba = np.full((6, 3), 1 / 3, dtype=np.float32)
    assert classification_metrics(y, pred, proba)["log_loss"] == pytest.approx(np.log(3), rel=1e-6)


def test_calibration_bins_by_hand() -> None:
    y = np.array([BUY, BUY, SELL, SELL])
    proba = np.array([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.95, 0.0, 0.05], [0.0, 0.05, 0.95]])
    cal = calibration(y, proba)
    b8, b9 = cal["bins"][8], cal["bins"][9]
    assert (b8["count"], b8["accuracy"], b8["confidence"]) == (2, 1.0, pytest.approx(0.8))
    assert (b9["count"], b9["accuracy"]) == (2, 0.5)  # one SELL right, one called BUY
    assert cal["ece"] == pytest.approx((2 * 0.2 + 2 * 0.45) / 4)


def test_trading_rule_fees_flips_and_final_close_by_hand() -> None:
    # positions: +1, +1, -1, 0, -1 ; next-bar returns: 1 %, -2 %, -1 %, 5 %, 0 (end)
    pos = np.array([1, 1, -1, 0, -1], dtype=np.int8)
    ret = np.array([0.01, -0.02, -0.01, 0.05, 0.0])
    net, entries = _symbol_pnl(pos, ret, fee_rate=0.001)
    turnover = np.array([1, 0, 2, 1, 1 + 1])  # entry, hold, flip, exit, entry + close at end
    np.testing.assert_allclose(net, pos * ret - 0.001 * turnover)
    assert entries == 3


def test_next_bar_returns_stop_at_gaps_and_symbol_ends() -> None:
    t = np.array([0, 0, 1, 1, 3], dtype=np.int64) * BAR_MS
    sym = np.array(["A", "B", "A", "B", "A"])
    close = np.array([100.0, 10.0, 101.0, 11.0, 200.0])
    r = next_bar_returns(t, close, sym)
    np.testing.assert_allclose(r, [0.01, 0.1, 0.0, 0.0, 0.0])  # A: 1 -> 3 is a gap


def test_ensemble_is_the_runtime_vote_renormalized_over_present_members() -> None:
    a = np.array([[0.2, 0.3, 0.5], [0.4, 0.2, 0.4]], dtype=np.float32)
    b = np.array([[0.6, 0.3, 0.1], [0.4, 0.2, 0.4]], dtype=np.float32)
    ens = runtime_ensemble({"a": a, "b": b}, {"a": 0.25, "b": 0.25, "c": 0.5})
    np.testing.assert_allclose(ens.proba, [[0.4, 0.3, 0.3], [0.4, 0.2, 0.4]], rtol=1e-6)
    assert ens.weights == {"a": 0.5, "b": 0.5} and ens.missing == ["c"]
    # row 0: SELL wins; row 1: SELL and BUY tie exactly -> HOLD (the runtime rule, not arg-max)
    assert ens.pred.tolist() == [SELL, HOLD]
    with pytest.raises(EvaluationError):
        runtime_ensemble({"a": a}, {"z": 1.0})
    with pytest.raises(EvaluationError, match="no evaluation rows"):
        runtime_ensemble({"a": a[:0]}, {"a": 1.0})


# ------------------------------------------------------------------------ end to end


def _softmax_graph(name: str, kind: str, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """A real ONNX classifier: (flattened) input @ W + b -> softmax -> "probabilities"."""
    shape = [None, len(FEATURE_NAMES)] if kind == "tabular" else [None, WINDOW, 5]
    nodes, src = [], kind
    if kind == "window":
        nodes.append(helper.make_node("Flatten", [kind], ["flat"], axis=1))
        src = "flat"
    nodes += [
        helper.make_node("MatMul", [src, "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(kind, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _register(registry: Path, tmp: Path, name: str, kind: str, model: onnx.ModelProto) -> None:
    path = tmp / f"{name}.onnx"
    onnx.save(model, path)
    shape: list[int | None] = [None, len(FEATURE_NAMES)] if kind == "tabular" else [None, WINDOW, 5]
    manifest = Manifest(
        model=name, version="v1", input=kind, input_shape=shape,
        feature_version=FEATURE_VERSION, feature_names=list(FEATURE_NAMES), window=WINDOW,
        classes=["SELL", "HOLD", "BUY"], label=LabelSpec().to_dict(),
        train_range={}, validation_range={}, data_source={"dataset": "test"},
        metrics={"walk_forward": {"mean": {"accuracy": 0.4, "balanced_accuracy": 0.38}},
                 "holdout": {"accuracy": 0.41}},
        parity={"max_abs_diff": 0.0}, config={}, seed=0,
    )  # fmt: skip
    register(registry, manifest, path)
    promote(registry, name, "v1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """xgboost (momentum-like on ret_1), nhits (seeded random linear map of the window)."""
    tmp = tmp_path_factory.mktemp("registry")
    reg = tmp / "registry"
    w_tab = np.zeros((len(FEATURE_NAMES), 3), dtype=np.float32)
    w_tab[FEATURE_NAMES.index("ret_1")] = [-2000.0, 0.0, 2000.0]
    tab_model = _softmax_graph("xgboost", "tabular", w_tab, np.array([0, 0.5, 0], np.float32))
    _register(reg, tmp, "xgboost", "tabular", tab_model)
    rng = np.random.default_rng(7)
    w_win = (rng.standard_normal((WINDOW * 5, 3)) * 0.05).astype(np.float32)
    _register(
        reg,
        tmp,
        "nhits",
        "window",
        _softmax_graph("nhits", "window", w_win, np.zeros(3, np.float32)),
    )
    return reg


@pytest.mark.skipif(not FUT.exists(), reason="shared Binance data not present")
def test_report_on_the_held_out_window(registry: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    weights = {"xgboost": 0.5, "nhits": 0.25, "patchtst": 0.25}
    report = write_report(registry, FUT, out, symbols=SYMBOLS, ensemble_weights=weights,
                          measure_latency=True)  # fmt: skip
    for f in (
        "report.json",
        "report.md",
        "confusion_matrices.png",
        "calibration.png",
        "equity.png",
    ):
        assert (out / f).stat().st_size > 500, f
        if f.endswith(".png"):
            assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    md = (out / "report.md").read_text()
    assert "| ensemble |" in md and "always_hold" in md and "patchtst" in md  # missing member named

    # The models' numbers agree with an independent scoring of the same rows by onnxruntime.
    ds = build_dataset(FUT, SYMBOLS, "2025-05-21T00:00Z", "2025-05-25T12:00Z")
    assert report["evaluation"]["rows"] == len(ds) == 2 * (4 * 1440 + 720 - 15)
    probs = {}
    for name, kind in (("xgboost", "tabular"), ("nhits", "window")):
        sess = ort.InferenceSession(str(registry / name / "v1" / "model.onnx"))
        probs[name] = sess.run(None, {kind: getattr(ds, kind)})[0]
        acc = float((probs[name].argmax(1) == ds.y).mean())
        assert report["predictors"][name]["metrics"]["accuracy"] == pytest.approx(acc)
    mix = (2 * probs["xgboost"] + probs["nhits"]) / 3
    ens = report["predictors"]["ensemble"]
    assert ens["metrics"]["accuracy"] == pytest.approx(float((mix.argmax(1) == ds.y).mean()))
    assert report["ensemble"]["missing"] == ["patchtst"]
    assert any("patchtst" in w for w in report["warnings"])
    assert report["tick_latency_us_p50"]["xgboost"] > 0

    # The system beside the rules: these models carry no gate table, so under the default
    # edge gate the whole topology stands aside, every BUY/SELL vetoed NO_EDGE, and says so.
    system = report["system"]
    assert system["gate"] == "edge" and system["stood_aside"] and system["closed_trades"] == 0
    assert system["bars"] == 2 * (4 * 1440 + 720)
    directional = sum(1 for a in mix.argmax(1) if a != HOLD)
    assert system["vetoes_by_reason"]["NO_EDGE"] > 0 and system["passed_signals"] == 0
    assert directional > 0  # the raw vote would have traded
    assert "**stood aside**: no trade on 12,960 bars" in md

    # Baselines: momentum from the raw closes; buy-and-hold equity from the raw closes.
    kl = load_klines(FUT, SYMBOLS)
    sign = {}
    for s, k in kl.items():
        idx = np.searchsorted(k.open_time_ms, ds.time_ms[ds.symbol == s])
        d = k.close[idx] - k.close[idx - 1]
        sign[s] = np.where(d > 0, BUY, np.where(d < 0, SELL, HOLD))
    mom = baseline_predictions(ds)["momentum"]
    for s in SYMBOLS:
        np.testing.assert_array_equal(mom[ds.symbol == s], sign[s])
    per_sym = []
    for s, k in kl.items():
        idx = np.searchsorted(k.open_time_ms, ds.time_ms[ds.symbol == s])
        r = k.close[idx[1:]] / k.close[idx[:-1]] - 1
        net = np.concatenate([r, [0.0]])
        net[0] -= 0.0004  # entry fee
        net[-1] -= 0.0004  # exit fee at the end
        per_sym.append(net)
    expected = np.prod(1 + np.mean(per_sym, axis=0)) - 1
    bh = report["predictors"]["buy_and_hold"]["trading"]
    assert bh["net_return"] == pytest.approx(expected, rel=1e-9) and bh["trades"] == 2
    # fixed-horizon trades of an always-long signal: rows 0, 15, 30, ... of every symbol
    fixed = sum(float((ds.fwd_return[ds.symbol == s][::15] - 0.0008).sum()) for s in SYMBOLS)
    bh_fixed = report["predictors"]["buy_and_hold"]["horizon_trades"]
    assert bh_fixed["sum_net_return"] == pytest.approx(fixed, rel=1e-9)
    assert bh_fixed["trades"] == sum(len(ds.fwd_return[ds.symbol == s][::15]) for s in SYMBOLS)
    hold = report["predictors"]["always_hold"]
    assert hold["horizon_trades"]["trades"] == 0
    assert hold["trading"]["net_return"] == 0.0 and hold["trading"]["trades"] == 0
    assert hold["metrics"]["prediction_balance"]["HOLD"] == 1.0


def test_models_from_other_feature_code_are_refused(registry: Path, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    w = np.zeros((len(FEATURE_NAMES), 3), dtype=np.float32)
    model = _softmax_graph("xgboost", "tabular", w, np.zeros(3, np.float32))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    manifest = json.loads((registry / "xgboost" / "v1" / "manifest.json").read_text())
    manifest.update(feature_version="f0-old", sha256="", onnx_bytes=0)
    register(reg, Manifest(**manifest), path)
    with pytest.raises(EvaluationError, match="f0-old"):
        write_report(reg, FUT, tmp_path / "out", symbols=SYMBOLS, ensemble_weights={"xgboost": 1.0},
                     measure_latency=False)  # fmt: skip


def test_fixed_horizon_trades_do_not_overlap_by_hand() -> None:
    pred = np.array([BUY, BUY, SELL, HOLD, SELL, HOLD, BUY, BUY])
    fwd = np.array([0.01, 0.5, 0.5, 0.5, -0.02, 0.5, 0.03, 0.5])
    # horizon 3: BUY at 0 (rows 1-2 ignored), HOLD at 3, SELL at 4 (5-6 ignored), BUY at 7
    np.testing.assert_allclose(horizon_trade_returns(pred, fwd, 3), [0.01, 0.02, 0.5])
