"""``pneumokit registry verify``: re-check a registry against what it recorded.

For each version: its metadata reads and names the right version; every
recorded artifact is present with its recorded sha256; no file lies there
unrecorded; and an exported ``model.onnx`` carries a valid contract that
agrees with ``metadata.json`` (threshold, class names, preprocessing, model).
"""

from __future__ import annotations

import json
import math

from ..errors import PneumokitError, RegistryError
from ..registry import golden
from ..registry.card import CARD_FILE, CARD_JSON
from ..registry.store import ALIASES_FILE, METADATA_FILE, MODEL_FILE, ModelVersion, Registry, validate_name
from ..training.gate import GATE_FILE
from .export import ONNX_FILE, metadata_props
from .quantize import INT8_FILE

DERIVED = (METADATA_FILE, CARD_FILE, CARD_JSON)  # rewritten as the version's record grows; not hashed


def verify(registry: Registry, ref: str | None = None, run: bool = False) -> list[dict]:
    """One ``{"ref", "problems"}`` per version checked: ``ref``'s, else every version's. ``run``:
    also re-score each exported version's golden self-test vectors (``pneumokit.registry.golden``); a
    version exported before they were stored gets a ``note``."""
    if ref is not None:
        name, version = registry._resolve(ref)
        targets = [(name, version)]
    else:
        targets = [(r["name"], v) for r in registry.list() for v in r["versions"]]
    reports = [_report(registry, n, v, run) for n, v in targets]
    for name in sorted({n for n, _ in targets}):
        problems = alias_problems(registry, name)
        if problems:
            reports.append({"ref": f"{name} aliases", "problems": problems})
    return reports


def _report(registry: Registry, name: str, version: int, run: bool) -> dict:
    problems = version_problems(registry, name, version)
    report: dict = {"ref": f"{name}:{version}", "problems": problems}
    if run and not problems:
        mv = registry.get(report["ref"])
        if ONNX_FILE not in mv.metadata.get("artifacts", {}):
            report["note"] = f"not exported: nothing to run (`pneumokit export {mv.ref}`)"
        elif not mv.metadata.get("golden"):
            report["note"] = ("exported before pneumokit stored golden vectors: nothing to run (re-export "
                              "into a new version to get them)")
        else:
            problems += golden.check(mv)
            report["golden"] = len(mv.metadata["golden"]["vectors"])
    return report


def alias_problems(registry: Registry, name: str) -> list[str]:
    """Aliases that are not valid names or point at no version."""
    path = registry.root / name / ALIASES_FILE
    try:
        aliases = registry.aliases(name)
    except RegistryError as exc:
        return [str(exc)]
    versions = set(registry._version_numbers(registry.root / name))
    problems = []
    for alias, version in sorted(aliases.items()):
        try:
            validate_name(alias, "alias")
        except RegistryError as exc:
            problems.append(f"{path}: {exc}")
        if version not in versions:
            problems.append(f"{path}: {name}@{alias} points at version {version}, which does not exist; "
                            f"point it elsewhere with `pneumokit registry alias {name} {alias} N`")
    return problems


def version_problems(registry: Registry, name: str, version: int) -> list[str]:
    """Everything wrong with one version, each a sentence naming the file."""
    try:
        mv = registry.get(f"{name}:{version}")
    except RegistryError as exc:
        return [str(exc)]
    meta_path = mv.path / METADATA_FILE
    problems = []
    if mv.metadata.get("name") != name or mv.metadata.get("version") != version:
        problems.append(f"{meta_path}: records {mv.metadata.get('name')}:{mv.metadata.get('version')}, "
                        f"but lies in the folder of {mv.ref}")
    recorded = mv.metadata.get("artifacts")
    if not isinstance(recorded, dict) or MODEL_FILE not in recorded:
        return [*problems, f"{meta_path}: records no artifacts (or no {MODEL_FILE})"]
    for rel in sorted(recorded):
        try:
            mv.verify(rel)
        except RegistryError as exc:
            problems.append(str(exc))
    for path in sorted(mv.path.rglob("*")):
        rel = str(path.relative_to(mv.path))
        if (path.is_file() or path.is_symlink()) and rel not in recorded and rel not in DERIVED:
            problems.append(f"{path}: not recorded in {meta_path} (a leftover of an interrupted "
                            "write, or added by hand); remove it")
    threshold = mv.metadata.get("threshold")
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and 0 <= threshold <= 1):
        problems.append(f"{meta_path}: threshold {threshold!r} is not a number in [0, 1]")
    for onnx_file in (ONNX_FILE, INT8_FILE):
        if onnx_file in recorded and not problems:
            problems += onnx_disagreements(mv, onnx_file)
    return problems


def onnx_disagreements(mv: ModelVersion, onnx_file: str = ONNX_FILE) -> list[str]:
    """Where an ONNX file's (``model.onnx``, ``model.int8.onnx``) ``pneumokit.*`` metadata disagrees
    with ``metadata.json``."""
    from .runtime import Predictor

    try:
        predictor = Predictor(mv.path / onnx_file, providers="cpu")
    except PneumokitError as exc:
        return [str(exc)]
    onnx = predictor.session.get_modelmeta().custom_metadata_map
    try:
        expected = metadata_props(mv.metadata, gate=GATE_FILE in mv.metadata.get("artifacts", {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"{mv.path / METADATA_FILE}: incomplete ({type(exc).__name__}: {exc})"]
    problems = []
    for key in ("pneumokit.threshold", "pneumokit.class_names", "pneumokit.preprocessing",
                "pneumokit.model", "pneumokit.calibration", "pneumokit.gate"):
        got, want = onnx.get(key), expected.get(key)
        if _parsed(got) != _parsed(want):
            problems.append(f"{mv.path / onnx_file}: {key} is {got} but {mv.path / METADATA_FILE} "
                            f"says {want}: one of them was edited; the ONNX file is what `predict` "
                            "and `evaluate` use")
    return problems


def _parsed(value: str | None):
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
