"""Where the development data lives: `shared/` beside the repository (as on CI); the registry's
promoted models copied for a test that changes them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.contracts.records import FeaturesComputed

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BINANCE = SHARED / "data" / "binance"


def registry_copy(to: Path) -> Path:
    """The promoted models' folders and the index of the repository's registry, copied to
    ``to``: a test that registers, promotes or rolls back changes this copy only."""
    from streams.config import Settings

    source = Settings().registry_dir
    to.mkdir(parents=True)
    shutil.copy2(source / "index.json", to / "index.json")
    for model in ("lightgbm", "nhits", "patchtst", "xgboost"):
        shutil.copytree(source / model, to / model)
    return to


def feature_rows(folder: str, symbols: list[str], start: str, end: str) -> list[FeaturesComputed]:
    """The feature rows the features stage would send for ``symbols`` of ``BINANCE/folder``."""
    from models.dataset import build_dataset
    from models.features import FEATURE_VERSION
    from streams.contracts.records import FeaturesComputed
    from streams.stages.features import NAMES_HASH

    ds = build_dataset(BINANCE / folder, symbols, start, end)
    return [
        FeaturesComputed(
            symbol=str(ds.symbol[i]),
            event_time_ms=int(ds.time_ms[i]),
            feature_version=FEATURE_VERSION,
            names_hash=NAMES_HASH,
            values=tuple(float(v) for v in ds.tabular[i]),
            window=tuple(float(v) for v in ds.window[i].ravel()),
            window_rows=int(ds.window.shape[1]),
            close=float(ds.close[i]),
            atr_pct=float(ds.tabular[i][12]),
            volatility=float(ds.tabular[i][5]),
        )
        for i in range(len(ds))
    ]
