"""The runtime (every ``streams`` module: CLI, worker, agents, demo, runner, and the ONNX scorer
they load lazily) imports no training package, so ``make demo``'s install without the train
extra (no torch, no CUDA) runs it."""

import subprocess
import sys
from pathlib import Path

TRAINING_PACKAGES = ("torch", "xgboost", "lightgbm", "onnx", "onnxscript", "onnxmltools",
                     "skl2onnx", "sklearn")  # fmt: skip

_PROBE = """
import importlib, pathlib, sys
for p in sorted(pathlib.Path("streams").rglob("*.py")):
    name = ".".join(p.with_suffix("").parts).removesuffix(".__init__")
    importlib.import_module(name)
importlib.import_module("models.scorer")
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_no_streams_module_imports_a_training_package():
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=root, capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert "onnxruntime" in loaded
    assert loaded.isdisjoint(TRAINING_PACKAGES), loaded & set(TRAINING_PACKAGES)
