"""What `pneumokit predict` gives, from Python: the rows, and the files beside them (a CSV, heatmap
overlays, DICOM results), every output checked before any image is scored.

    from pneumokit import predict
    result = predict("cnn_optimized", ["scans/"], output="rows.csv", heatmap_dir="overlays")
    result.rows        # one dict per image: file, probability, label, in_scope, gate_score, ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.config import INFERENCE_BATCH_SIZE
from ..core.files import check_output_file, check_output_folder, printable, write_csv_atomic
from ..errors import ConfigError
from ..registry.store import Registry
from .runtime import Predictor, expand_inputs, gate_state


@dataclass
class Prediction:
    """The result of ``predict``: the rows, what was used to get them, and the notes for a reader
    (files without a DICOM result, a model without a heatmap output)."""

    model: str
    providers: list[str]
    tf32: bool
    threshold: float
    gate: str  # "on", "off" or "absent" (pneumokit.inference.runtime.gate_state)
    rows: list[dict]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["error"]]

    def to_dict(self) -> dict:
        return {"model": self.model, "providers": self.providers, "tf32": self.tf32,
                "threshold": self.threshold, "gate": self.gate, "predictions": self.rows}


def predict(model: str | os.PathLike, inputs, *, output=None, heatmap_dir=None, dicom_out=None,
            threshold: float | None = None, batch_size: int = INFERENCE_BATCH_SIZE, providers="auto",
            tf32: bool = False, gate: bool = True, registry: Registry | None = None) -> Prediction:
    """Score ``inputs`` (image files or folders, searched recursively) with ``model`` (a ``.onnx``
    file or a registry ref); with ``output`` write the rows as CSV, with ``heatmap_dir`` an
    overlay PNG per image (a model exported with ``--heatmap``), with ``dicom_out`` a DICOM SR
    and SC per DICOM input (``pneumokit.inference.dicom_results``). ``gate=False`` labels every
    input (research use; recorded in ``Prediction.gate``)."""
    registry = registry or Registry()
    _check_outputs(output, heatmap_dir, dicom_out, [*map(str, inputs), str(model)], registry.root)
    predictor = Predictor(model, providers=providers, registry=registry, tf32=tf32)
    if heatmap_dir is not None and predictor.heatmap_output is None:
        raise ConfigError(f"--heatmap: {predictor.path} has no heatmap output; export the model with "
                          "`pneumokit export REF --heatmap`, or use `pneumokit explain`")
    paths = expand_inputs(inputs)
    if not paths:
        raise ConfigError(f"no images found in {', '.join(map(str, inputs))}")
    heat = heatmap_dir is not None or (dicom_out is not None and predictor.heatmap_output is not None)
    rows = predictor.predict_files(paths, batch_size=batch_size, threshold=threshold, heatmap=heat, gate=gate)
    used = predictor.threshold if threshold is None else threshold
    result = Prediction(str(predictor.path), predictor.providers_in_use, predictor.tf32, used,
                        gate_state(gate, predictor.gate is not None), rows)
    if dicom_out is not None:
        result.notes += _dicom_results(dicom_out, predictor, paths, rows, used, result.gate)
    if heatmap_dir is not None:
        from .explain import write_overlays

        write_overlays(heatmap_dir, paths, rows, used, "cam")
    for row in rows:
        row.pop("heatmap", None)
    if output is not None:
        import pandas as pd

        write_csv_atomic(output, pd.DataFrame(rows))
    return result


def _check_outputs(output, heatmap_dir, dicom_out, inputs: list[str], registry_root) -> None:
    """Every output can be written, and writes over no input, before any image is scored."""
    if output is not None:
        check_output_file(output, inputs=inputs, registry_root=registry_root)
    if heatmap_dir is not None:
        check_output_folder(heatmap_dir, "--heatmap", create=True, registry_root=registry_root)
    if dicom_out is not None:
        check_output_folder(dicom_out, "--dicom-out", create=True, registry_root=registry_root)


def _dicom_results(out, predictor: Predictor, paths, rows, threshold: float, state: str) -> list[str]:
    """An SR and an SC per DICOM input; each row gets ``dicom_sr``, ``dicom_sc`` and ``dicom_note``.
    Returns the notes: one per file without them, and a summary."""
    from .dicom_results import NO_HEATMAP, model_identity, write_dicom_results

    written = write_dicom_results(rows, paths, out, threshold=threshold, gate=state,
                                  **model_identity(predictor))
    lines = []
    if predictor.heatmap_output is None:
        lines.append(f"note: --dicom-out: {predictor.path} has no heatmap output: SR only, no SC overlay; "
                     "export the model with `pneumokit export REF --heatmap` for the overlays")
    for row, path, result in zip(rows, paths, written, strict=True):
        row.update(dicom_sr=result["sr"], dicom_sc=result["sc"], dicom_note=result["note"])
        if result["note"] and result["note"] != NO_HEATMAP:
            lines.append(f"note: {printable(path)}: {result['note']}")
    sr, sc = (sum(1 for r in written if r[k]) for k in ("sr", "sc"))
    return [*lines, f"--dicom-out: wrote {sr} SR and {sc} SC file(s) to {printable(out)}"]
