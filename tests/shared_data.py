"""Where the development data lives: `shared/` beside the repository (as on CI)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BINANCE = SHARED / "data" / "binance"
