"""``models export``: write a registered version's kept native model to ONNX again, with parity.

The registered version is not modified; parity rows are rebuilt from the data over the
manifest's held-back range.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from models.catalog import export_shape, model_input, model_module
from models.fitting import TrainingError
from models.sampling import evenly_spread

PARITY_ROWS = 20_000


def reexport(
    registry: Path, model: str, version: str, out: Path, data_dir: Path | None = None
) -> Any:
    """Re-export ``model`` ``version`` to ``out``; returns a :class:`models.parity.ParityResult`."""
    from models.dataset import LabelSpec, build_dataset
    from models.parity import check_parity
    from models.registry import verify

    registered = verify(registry, model, version)
    manifest = registered.manifest
    if manifest.native_file is None:
        raise TrainingError(
            f"{model} {version} keeps no native artifact (only ONNX); re-train to re-export"
        )
    _, module, _ = model_module(model.split("-")[0])
    native = module.load_native(registered.onnx_path.parent / manifest.native_file)
    label_fields = {f.name for f in dataclasses.fields(LabelSpec)}
    spec = LabelSpec(**{k: v for k, v in manifest.label.items() if k in label_fields})
    held = manifest.validation_range
    dataset = build_dataset(
        data_dir or Path(manifest.data_source["data_dir"]),
        manifest.data_source.get("symbols"),
        held["first_ms"],
        held["last_ms"] + 60_000,
        spec,
    )
    x_all = model_input(dataset, module.INPUT)
    module.export_onnx(native, out, export_shape(module, x_all))
    rows = evenly_spread(np.arange(len(dataset)), PARITY_ROWS)
    return check_parity(model, lambda x: module.predict_proba(native, x), out, x_all[rows])
