"""Where the development data lives: `shared/` beside the repository (as on CI); the registry's
promoted models copied for a test that changes them."""

import shutil
from pathlib import Path

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
