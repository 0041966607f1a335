"""Fixtures of the contract tests: a scratch copy of schemas/ to break things in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streams.contracts.schema_loader import SCHEMAS_DIR


@pytest.fixture
def tmp_schemas(tmp_path: Path) -> Path:
    """A private copy of the project's schemas/ (avsc, examples, registry, released)."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, target)
    return target
