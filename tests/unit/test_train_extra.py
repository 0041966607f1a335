"""Without the train extra (``make demo``'s slim install) a training command says what to install.

The missing module is real: the catalog is pointed at a module name that does not exist, which
fails the way ``models.nhits`` fails in a venv without torch.
"""

from pathlib import Path

import pytest

from models import catalog
from models.fitting import TRAIN_EXTRA_HINT, TrainingError
from models.train import TrainPlan, run


def test_a_model_whose_extra_is_missing_names_the_install(monkeypatch):
    monkeypatch.setitem(catalog.MODEL_MODULES, "nhits", "models.not_installed_here")
    with pytest.raises(TrainingError, match=TRAIN_EXTRA_HINT):
        catalog.model_module("nhits")


def test_training_without_any_importable_model_fails_before_reading_data(monkeypatch, tmp_path):
    monkeypatch.setitem(catalog.MODEL_MODULES, "nhits", "models.not_installed_here")
    plan = TrainPlan(
        data_dir=Path(tmp_path / "no-such-data"), registry=tmp_path, version="v1",
        models=("nhits",),
    )  # fmt: skip
    logged: list[str] = []
    # The data folder does not exist: reaching the dataset would raise DatasetError instead.
    with pytest.raises(TrainingError, match="no model can be trained") as err:
        run(plan, log=logged.append)
    assert TRAIN_EXTRA_HINT in str(err.value)
    assert len(logged) == 1 and TRAIN_EXTRA_HINT in logged[0]
