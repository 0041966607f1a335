"""The model registry: versioned ONNX artifacts with a manifest, and which version is promoted.

Layout (all plain files, reviewable in git)::

    <registry>/index.json                       {"promoted": {"xgboost": "v1", ...}}
    <registry>/<model>/<version>/model.onnx
    <registry>/<model>/<version>/manifest.json  version, sha256, features, window, label, ranges,
                                                data source, metrics, parity figure, config
    <registry>/<model>/<version>/native.*       optional native artifact (GBDTs) for re-export

Standard library only: the workers import this next to onnxruntime. Every load verifies the
ONNX file against the manifest's sha256, so a corrupt or swapped artifact is refused with a
clear error instead of producing silent garbage signals.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
MANIFEST_SCHEMA = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(RuntimeError):
    """A registry operation failed (unknown model/version, bad manifest, existing version)."""


class ArtifactIntegrityError(RegistryError):
    """An artifact does not match the sha256 recorded in its manifest."""


@dataclass(frozen=True)
class Manifest:
    """What a registered model is and how it was made. Written as ``manifest.json``."""

    model: str
    version: str
    input: str  # "tabular" | "window"
    input_shape: list[int | None]  # e.g. [None, 24] or [None, 64, 5]; None = batch
    feature_version: str
    feature_names: list[str]
    window: int
    classes: list[str]
    label: dict[str, Any]
    train_range: dict[str, Any]
    validation_range: dict[str, Any]
    data_source: dict[str, Any]
    metrics: dict[str, Any]
    parity: dict[str, Any]
    config: dict[str, Any]
    seed: int
    sha256: str = ""
    onnx_bytes: int = 0
    native_file: str | None = None
    notes: list[str] = field(default_factory=list)
    schema: int = MANIFEST_SCHEMA
    edge_gate: dict[str, Any] | None = None
    """The expected-value gate table of the model set this version was promoted in
    (``models/edge.py``), or None before ``models gate`` ran for it."""
    drift_reference: dict[str, Any] | None = None
    """Binned feature and predicted-class distributions of the training window
    (``models/drift.py``), or None before ``models reference`` ran for it."""

    def to_json(self) -> str:
        """Stable JSON (sorted keys) so re-registering the same model gives the same bytes."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        """Parse a manifest; unknown or missing keys raise :class:`RegistryError`."""
        try:
            raw = json.loads(text)
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise RegistryError(f"{source}: not a valid manifest ({exc})") from exc


@dataclass(frozen=True)
class RegisteredModel:
    """A verified artifact: its manifest and the path of its ONNX file."""

    manifest: Manifest
    onnx_path: Path

    @property
    def name(self) -> str:
        """Model name (``xgboost``, ``lightgbm``, ``nhits``, ``patchtst``)."""
        return self.manifest.model

    @property
    def version(self) -> str:
        """Registered version string."""
        return self.manifest.version


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise RegistryError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def version_dir(registry: Path, model: str, version: str) -> Path:
    """Directory of one version (not checked for existence)."""
    return registry / _check_name("model", model) / _check_name("version", version)


def register(
    registry: Path,
    manifest: Manifest,
    onnx_file: Path,
    native_file: Path | None = None,
    overwrite: bool = False,
) -> RegisteredModel:
    """Copy ``onnx_file`` (and optionally a native artifact) into the registry with its manifest.

    The manifest's ``sha256`` and ``onnx_bytes`` are filled in here from the copied bytes.
    An existing version is refused unless ``overwrite`` — versions are meant to be immutable.
    """
    target = version_dir(registry, manifest.model, manifest.version)
    if target.exists() and not overwrite:
        raise RegistryError(f"{manifest.model} {manifest.version} already exists at {target}")
    target.mkdir(parents=True, exist_ok=True)
    onnx_dst = target / MODEL_FILE
    shutil.copyfile(onnx_file, onnx_dst)
    native_name = None
    if native_file is not None:
        native_name = "native" + "".join(native_file.suffixes)
        shutil.copyfile(native_file, target / native_name)
    final = _replace(
        manifest,
        sha256=sha256_file(onnx_dst),
        onnx_bytes=onnx_dst.stat().st_size,
        native_file=native_name,
    )
    _atomic_write(target / MANIFEST_FILE, final.to_json())
    return RegisteredModel(final, onnx_dst)


def write_manifest(registry: Path, manifest: Manifest) -> Path:
    """Rewrite a registered version's manifest (e.g. with its gate table); artifact untouched."""
    target = version_dir(registry, manifest.model, manifest.version) / MANIFEST_FILE
    if not target.is_file():
        raise RegistryError(f"{manifest.model} {manifest.version} is not registered in {registry}")
    _atomic_write(target, manifest.to_json())
    return target


def gate_tables(registry: Path, versions: dict[str, str]) -> dict[str, dict[str, Any] | None]:
    """Each version's manifest gate table (None where it has none), for the supervisor."""
    return {m: read_manifest(registry, m, v).edge_gate for m, v in sorted(versions.items())}


def _replace(manifest: Manifest, **changes: Any) -> Manifest:
    data = asdict(manifest)
    data.update(changes)
    return Manifest(**data)


def read_manifest(registry: Path, model: str, version: str) -> Manifest:
    """The manifest of one version; :class:`RegistryError` if it is not registered."""
    path = version_dir(registry, model, version) / MANIFEST_FILE
    if not path.is_file():
        known = ", ".join(list_versions(registry, model)) or "none"
        raise RegistryError(f"{model} {version} is not registered in {registry} (known: {known})")
    manifest = Manifest.from_json(path.read_text(encoding="utf-8"), source=str(path))
    if (manifest.model, manifest.version) != (model, version):
        raise RegistryError(f"{path} describes {manifest.model} {manifest.version}")
    return manifest


def list_versions(registry: Path, model: str) -> list[str]:
    """Registered versions of ``model``, in natural order (v2 before v10)."""
    model_dir = registry / model
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if (p / MANIFEST_FILE).is_file()]
    return sorted(names, key=_natural_key)


def list_models(registry: Path) -> list[str]:
    """Model names with at least one registered version."""
    if not registry.is_dir():
        return []
    return sorted(
        p.name for p in registry.iterdir() if p.is_dir() and list_versions(registry, p.name)
    )


def all_manifests(registry: Path) -> list[Manifest]:
    """Every registered manifest, by model then version."""
    return [
        read_manifest(registry, model, version)
        for model in list_models(registry)
        for version in list_versions(registry, model)
    ]


def _natural_key(text: str) -> list[Any]:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text)]


def next_version(registry: Path) -> str:
    """``v<N+1>``, N the highest ``v<number>`` of any model (one version per training run)."""
    numbers = [
        int(v[1:])
        for model in list_models(registry)
        for v in list_versions(registry, model)
        if re.fullmatch(r"v\d+", v)
    ]
    return f"v{max(numbers, default=0) + 1}"


def versions_trained_for(registry: Path, cause: str) -> dict[str, str]:
    """Model -> version registered by the training run of ``cause`` (its manifest's
    ``data_source.trained_for``); the newest such version where a model has several."""
    found: dict[str, str] = {}
    for model in list_models(registry):
        for version in list_versions(registry, model):  # natural order: the newest wins
            if read_manifest(registry, model, version).data_source.get("trained_for") == cause:
                found[model] = version
    return found


def verify(registry: Path, model: str, version: str) -> RegisteredModel:
    """Load a manifest and check the ONNX file's sha256; :class:`ArtifactIntegrityError` if off."""
    manifest = read_manifest(registry, model, version)
    onnx_path = version_dir(registry, model, version) / MODEL_FILE
    if not onnx_path.is_file():
        raise ArtifactIntegrityError(f"{model} {version}: {onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != manifest.sha256:
        raise ArtifactIntegrityError(
            f"{model} {version}: {onnx_path} has sha256 {actual[:12]}..., manifest says "
            f"{manifest.sha256[:12]}...; the artifact is corrupt or was replaced — re-export "
            f"or re-train it, do not score with it"
        )
    return RegisteredModel(manifest, onnx_path)


def read_index(registry: Path) -> dict[str, str]:
    """Promoted version per model (empty when nothing is promoted yet)."""
    path = registry / INDEX_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        promoted = raw["promoted"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RegistryError(f"{path}: not a valid registry index ({exc})") from exc
    if not isinstance(promoted, dict):
        raise RegistryError(f"{path}: 'promoted' must map model -> version")
    return {str(k): str(v) for k, v in promoted.items()}


def promote(registry: Path, model: str, version: str) -> dict[str, str]:
    """Mark ``version`` as the one workers load for ``model``; verifies the artifact first."""
    verify(registry, model, version)
    promoted = read_index(registry)
    promoted[model] = version
    _atomic_write(
        registry / INDEX_FILE, json.dumps({"promoted": promoted}, indent=2, sort_keys=True) + "\n"
    )
    return promoted


def resolve(registry: Path, model: str, version: str | None = None) -> RegisteredModel:
    """A verified artifact: ``version`` if given, else the promoted one."""
    if version is None:
        version = read_index(registry).get(model)
        if version is None:
            raise RegistryError(f"no promoted version of {model} in {registry}")
    return verify(registry, model, version)


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written manifest/index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
