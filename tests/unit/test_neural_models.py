"""N-HiTS and PatchTST: building blocks, seeded reproducibility, ONNX export contract and parity.

Real data (two um_futures symbols, three days); the held-back day is never trained on and is
where parity is checked. Networks are trained for one or two epochs on a few thousand rows:
enough to move every weight away from its initialisation, small enough for a shared 2-core box.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from models import nhits, patchtst  # noqa: E402
from models.dataset import CLASSES, Dataset, build_dataset  # noqa: E402
from models.fitting import class_weights  # noqa: E402
from models.parity import PARITY_TOLERANCE, onnx_probabilities  # noqa: E402
from models.scorer import load_session  # noqa: E402
from models.sequence import network as sn  # noqa: E402
from models.sequence import training as st  # noqa: E402
from models.sequence.layers import InstanceNorm  # noqa: E402

pytestmark = pytest.mark.train

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "um_futures_1m_2025"
MODULES: dict[str, ModuleType] = {"nhits": nhits, "patchtst": patchtst}
QUICK = st.TrainConfig(epochs=2, patience=1, train_stride=2, show_progress=False, num_threads=1)
CONFIGS = {
    "nhits": dataclasses.replace(nhits.DEFAULT_CONFIG, train=QUICK),
    "patchtst": dataclasses.replace(patchtst.DEFAULT_CONFIG, train=QUICK),
}


@pytest.fixture(scope="module")
def split() -> tuple[Dataset, Dataset]:
    """Three real days of two symbols; the last day (after a purge gap) is held back."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    ds = build_dataset(DATA, ["BTCUSDT", "SOLUSDT"], "2025-05-10", "2025-05-13", stride=2)
    cut = int(np.datetime64("2025-05-12T00:00", "ms").astype(np.int64))
    gap = ds.label_spec.horizon_bars * 60_000
    return ds.subset(ds.time_ms < cut - gap), ds.subset(ds.time_ms >= cut)


@pytest.fixture(scope="module")
def trained(split: tuple[Dataset, Dataset]) -> dict[str, sn.TrainedNetwork]:
    train, val = split
    return {name: mod.train(train, val, CONFIGS[name], seed=11) for name, mod in MODULES.items()}


@pytest.fixture(scope="module")
def exported(trained: dict[str, sn.TrainedNetwork], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:  # fmt: skip
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, net in trained.items():
        paths[name] = out / f"{name}.onnx"
        MODULES[name].export_onnx(net, paths[name], net.window_shape)
    return paths


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize(("knots", "length"), [(1, 16), (2, 16), (4, 16), (3, 7), (16, 16)])
def test_interpolation_matrix_matches_linear_interpolate(knots: int, length: int) -> None:
    theta = torch.randn(4, 5, knots, generator=torch.Generator().manual_seed(knots))
    expected = torch.nn.functional.interpolate(theta, size=length, mode="linear")
    got = theta @ nhits.interpolation_matrix(knots, length)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("window", "patch", "stride"), [(64, 16, 16), (64, 16, 8), (64, 8, 4)])
def test_patch_index_matches_unfold_with_end_replication(window: int, patch: int, stride: int
                                                         ) -> None:  # fmt: skip
    x = torch.arange(3 * window, dtype=torch.float32).reshape(1, 3, window)
    padded = torch.nn.functional.pad(x, (0, stride), mode="replicate")
    expected = padded.unfold(-1, patch, stride)  # PatchTST's reference patching
    got = x[:, :, patchtst.patch_index(window, patch, stride)]
    torch.testing.assert_close(got, expected)


def test_instance_norm_standardises_and_keeps_scale_as_features() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 5, generator=g) * torch.tensor([0.1, 0.3, 1.0, 10.0, 0.5]) + 3.0
    normalized, stats = InstanceNorm(5)(x)
    torch.testing.assert_close(normalized.mean(1), torch.zeros(8, 5), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalized.std(1, unbiased=False), torch.ones(8, 5), atol=1e-3,
                               rtol=0)  # fmt: skip
    torch.testing.assert_close(stats[:, 5:], x.std(1, unbiased=False).log(), atol=1e-4, rtol=0)


def test_class_weights_inverse_frequency_and_absent_class() -> None:
    w = class_weights(np.array([0, 0, 0, 1, 2, 2]))
    np.testing.assert_allclose(w, [6 / 9, 6 / 3, 6 / 6], rtol=1e-6)
    assert class_weights(np.array([1, 1, 2]))[0] == 1.0


def test_training_rows_sample_every_symbol_slot_and_keep_the_most_recent() -> None:
    # 15 symbols per minute, (time, symbol) order: a fixed stride of 3 would hit 5 slots only.
    rows = st.select_training_rows(15 * 400, stride=3, max_rows=10_000, seed=1)
    assert len(rows) == 2000
    assert set(rows % 15) == set(range(15))
    capped = st.select_training_rows(1000, stride=1, max_rows=100, seed=1)
    np.testing.assert_array_equal(capped, np.arange(900, 1000))
    again = st.select_training_rows(15 * 400, stride=3, max_rows=10_000, seed=1)
    np.testing.assert_array_equal(rows, again)


# --------------------------------------------------------------------------- trained networks


@pytest.mark.parametrize("name", list(MODULES))
def test_probabilities_are_a_distribution(name: str, trained: dict, split: tuple) -> None:
    _, val = split
    proba = MODULES[name].predict_proba(trained[name], val.window)
    assert proba.dtype == np.float32
    assert proba.shape == (len(val), len(CLASSES))
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert proba.std(axis=0).max() > 1e-3, "outputs do not depend on the input"


@pytest.mark.parametrize("name", list(MODULES))
def test_same_seed_same_weights_other_seed_different(name: str, trained: dict, split: tuple
                                                     ) -> None:  # fmt: skip
    train, val = split
    again = MODULES[name].train(train, val, CONFIGS[name], seed=11)
    first = trained[name].module.state_dict()
    for key, tensor in again.module.state_dict().items():
        assert torch.equal(tensor, first[key]), f"{name}.{key} differs between identical runs"
    np.testing.assert_array_equal(
        MODULES[name].predict_proba(again, val.window),
        MODULES[name].predict_proba(trained[name], val.window),
    )
    other = MODULES[name].train(train, val, CONFIGS[name], seed=12)
    assert not torch.equal(other.module.state_dict()["head.weight"], first["head.weight"]), (
        "a different seed gave identical weights"
    )


@pytest.mark.parametrize("name", list(MODULES))
def test_early_stopping_keeps_the_best_epoch_of_the_stopping_block(
    name: str, trained: dict, split: tuple
) -> None:
    train, val = split
    net = trained[name]
    history = net.history
    assert history.early_stopping == "inner"
    assert history.best_epoch == int(np.argmin(history.val_loss))
    _, stop = st.early_stopping_split(train, val, CONFIGS[name].train, seed=11)
    weights = torch.tensor(history.class_weights)
    logits = sn.logits(net.module, stop.window)
    loss = float(
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(stop.y), weight=weights)
    )
    assert loss == pytest.approx(min(history.val_loss), rel=1e-5)


def test_inner_stopping_block_is_purged_and_after_the_fitted_rows(split: tuple) -> None:
    train, _ = split
    config = QUICK
    fit_idx, stop_idx = st.inner_blocks(train, config)
    gap = train.time_ms[stop_idx].min() - train.time_ms[fit_idx].max()
    assert gap > config.purge_bars * 60_000
    assert len(stop_idx) > 0.1 * len(train)


def test_inner_early_stopping_never_reads_the_validation_split(split: tuple) -> None:
    train, val = split
    scrambled = dataclasses.replace(val, y=np.roll(val.y, 17), window=val.window[::-1].copy())
    a = patchtst.train(train, val, CONFIGS["patchtst"], seed=5)
    b = patchtst.train(train, scrambled, CONFIGS["patchtst"], seed=5)
    for key, tensor in a.module.state_dict().items():
        assert torch.equal(tensor, b.module.state_dict()[key]), key


def test_val_early_stopping_follows_the_validation_split(split: tuple) -> None:
    train, val = split
    config = dataclasses.replace(
        CONFIGS["nhits"], train=dataclasses.replace(QUICK, early_stopping="val")
    )
    net = nhits.train(train, val, config, seed=5)
    assert net.history.val_rows == len(val)
    arrays = st.Rows(train.window, train.y)  # no time_ms: inner mode must refuse, not guess
    with pytest.raises(sn.NeuralModelError, match="time_ms"):
        nhits.train(arrays, val, CONFIGS["nhits"], seed=5)


@pytest.mark.parametrize("name", list(MODULES))
def test_onnx_parity_on_held_back_rows(name: str, trained: dict, exported: dict, split: tuple
                                       ) -> None:  # fmt: skip
    _, val = split
    native = MODULES[name].predict_proba(trained[name], val.window)
    onnx_out = onnx_probabilities(exported[name], val.window)
    diff = float(np.abs(native - onnx_out).max())
    assert diff <= PARITY_TOLERANCE, f"{name}: max abs probability difference {diff:.2e}"
    assert (native.argmax(1) == onnx_out.argmax(1)).mean() > 0.999


@pytest.mark.parametrize("name", list(MODULES))
def test_onnx_contract_and_dynamic_batch(name: str, exported: dict, split: tuple) -> None:
    _, val = split
    session = load_session(exported[name])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("window", "probabilities")
    assert inp.type == out.type == "tensor(float)"
    assert not isinstance(inp.shape[0], int), "batch dimension must be symbolic"
    assert inp.shape[1:] == list(val.window.shape[1:])
    full = session.run(["probabilities"], {"window": val.window[:256]})[0]
    assert full.shape == (256, 3)
    for n in (1, 7):
        part = session.run(["probabilities"], {"window": val.window[:n]})[0]
        assert part.shape == (n, 3)
        np.testing.assert_allclose(part, full[:n], atol=1e-6)


@pytest.mark.parametrize("name", list(MODULES))
def test_native_round_trip_scores_identically(name: str, trained: dict, split: tuple,
                                              tmp_path: Path) -> None:  # fmt: skip
    _, val = split
    path = tmp_path / f"{name}{MODULES[name].NATIVE_SUFFIX}"
    MODULES[name].save_native(trained[name], path)
    loaded = MODULES[name].load_native(path)
    assert loaded.config == trained[name].config
    np.testing.assert_array_equal(
        MODULES[name].predict_proba(loaded, val.window),
        MODULES[name].predict_proba(trained[name], val.window),
    )


@pytest.mark.parametrize("name", list(MODULES))
def test_bad_inputs_raise_our_error(name: str, trained: dict, split: tuple) -> None:
    _, val = split
    bad = val.window[:4].copy()
    bad[2, 10, 1] = np.nan
    with pytest.raises(sn.NeuralModelError, match="NaN"):
        MODULES[name].predict_proba(trained[name], bad)
    with pytest.raises(sn.NeuralModelError, match="trained on windows"):
        MODULES[name].predict_proba(trained[name], val.window[:, 1:, :])
