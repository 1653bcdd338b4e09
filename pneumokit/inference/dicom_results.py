"""DICOM results of ``predict``: a Structured Report and a Secondary Capture per DICOM input.

Built with highdicom, for a DICOM source image only (docs/data.md, "DICOM results"):

- ``STEM.sr.dcm``: a Comprehensive 3D SR whose content is a TID 1500 Measurement Report
  with one TID 1501 measurement group: the finding (DCM 121071 "Finding" = SCT 233604007
  "Pneumonia" or SCT 17621005 "Normal"), the probability (DCM 122157, UCUM "1") and the
  threshold (DCM 122411, UCUM "1"), the model as TID 4019 Algorithm Identification, whether
  the input gate found the image in the model's scope, and the source image (its SOP Class
  and Instance UIDs; its Study and Series UIDs are in the evidence). An image out of scope
  gets no finding, no probability: the report says it was not assessed, and why.
- ``STEM.sc.dcm``: the heatmap overlay (``pneumokit.inference.overlay``) as an RGB Secondary Capture
  image that references the source image.

Both go into the source's study, in new series (one SR and one SC series per study per run),
with fresh UIDs. Patient and study attributes are copied from the source; nothing else that
identifies anyone is: not the source's equipment, institution or station. Each file is
validated by highdicom on creation, read back with pydicom before it is written, and never
written over an existing file.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np

from ..core.files import atomic_write, printable
from ..data.dicom import is_dicom
from ..errors import ConfigError
from ..registry.store import sha256_file

# SNOMED CT 233604007 |Pneumonia (disorder)| (SNOMED CT International); the other codes are
# from DICOM PS3.16 as pydicom's code dictionary holds them (pydicom.sr.codedict.codes).
PNEUMONIA = ("233604007", "SCT", "Pneumonia")
# Concepts DICOM has no code for, in a private coding scheme declared in the SR's Coding
# Scheme Identification Sequence.
SCHEME = "99PNEUMOKIT"
IN_SCOPE = ("IN-SCOPE", SCHEME, "Image in scope of the model (input gate)")
GATE_SCORE = ("GATE-SCORE", SCHEME, "Input gate score")
MANUFACTURER = "pneumokit"
SR_SERIES_NUMBER = 9901  # high, so that they sort after the acquired series
SC_SERIES_NUMBER = 9902
OUT_OF_SCOPE = "no overlay: the image is out of scope; the SR says it was not assessed and why"
NO_HEATMAP = "no overlay: the model has no heatmap output (export it with `pneumokit export REF --heatmap`)"
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# the Type 2 patient and study attributes highdicom's constructors take (pneumokit copies the
# source's own values after them; empty when the source has none)
TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
         "StudyDate", "StudyTime", "ReferringPhysicianName")


def model_identity(predictor) -> dict:
    """The keyword arguments of ``write_dicom_results`` that describe ``predictor``'s model:
    its name and version (registry ref, else the file's ``pneumokit.model``), class names and a
    device UID derived from the ONNX file's sha256 (the same model gives the same UID)."""
    from pydicom.uid import generate_uid

    info = predictor.model_info or {}
    if predictor.ref:
        name, _, version = predictor.ref.rpartition(":")
    else:
        name, version = str(info.get("name") or Path(predictor.path).stem), str(info.get("version", ""))
    return {"model_name": name, "model_version": version or "unknown",
            "class_names": tuple(predictor.class_names),
            "device_uid": generate_uid(entropy_srcs=["pneumokit model", sha256_file(Path(predictor.path))])}


def write_dicom_results(rows: list[dict], paths, out_dir: str | os.PathLike, *, model_name: str,
                        model_version: str, threshold: float, class_names=("NORMAL", "PNEUMONIA"),
                        device_uid: str | None = None, gate: str = "on", method: str = "cam") -> list[dict]:
    """One SR (and, with a heatmap, one SC) in ``out_dir`` per DICOM input among ``paths``.

    ``rows`` are ``Predictor.predict_files`` rows of ``paths`` (with ``heatmap=True`` for the
    overlays; rows without a ``heatmap`` get an SR only); ``threshold`` is the one they were
    labelled with, ``gate`` the input gate's state (``on``, ``off`` or ``absent``). Returns one
    dict per row: ``sr`` and ``sc`` (paths written, or None) and ``note`` (why not, or None).
    """
    from highdicom import UID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {"model_name": model_name, "model_version": model_version, "threshold": float(threshold),
           "class_names": tuple(class_names), "device_uid": device_uid or UID(), "gate": gate,
           "method": method, "series": {}, "inputs": {os.path.realpath(p) for p in paths}}
    return [_write_one(row, path, out, run) for row, path in zip(rows, paths, strict=True)]


def _write_one(row: dict, path, out: Path, run: dict) -> dict:
    result: dict[str, str | None] = {"sr": None, "sc": None, "note": None}
    source, why = _source(row, path)
    if source is None:
        return result | {"note": f"no DICOM result: {why}"}
    stem = Path(path).stem
    try:
        sr = _checked_bytes(_structured_report(source, row, run))
    except Exception as exc:  # a source value highdicom refuses: said in the row, the run goes on
        return result | {"note": f"no DICOM result: the SR cannot be built from this source ({_why(exc)})"}
    result["sr"] = str(_write_new(out, stem, ".sr.dcm", sr, run["inputs"]))
    if row["label"] is None:
        return result | {"note": OUT_OF_SCOPE}
    if row.get("heatmap") is None:
        return result | {"note": NO_HEATMAP}
    try:
        sc = _checked_bytes(_secondary_capture(source, path, row, run))
    except Exception as exc:
        return result | {"note": f"no overlay: the SC cannot be built from this source ({_why(exc)})"}
    return result | {"sc": str(_write_new(out, stem, ".sc.dcm", sc, run["inputs"]))}


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _source(row: dict, path):
    """The source's header without pixels, or ``(None, why not)``."""
    import pydicom

    if row.get("error"):
        return None, "the file could not be read"
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if not is_dicom(head):
            return None, "not a DICOM file (an SR and an SC go into the study of a DICOM source image)"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for damaged headers
        return None, f"its DICOM header cannot be read ({_why(exc)})"
    missing = [k for k in UID_KEYS if not str(ds.get(k, "") or "").strip()]
    if missing:
        return None, f"the source has no {', '.join(missing)} to reference"
    return ds, None


def _reference(ds):
    """A copy of the source header ``ds`` for highdicom's constructors, whose checks real files
    often fail (a PatientName without ``^``, as RSNA's ids; PatientSex U): the Type 2 patient and
    study attributes empty (the instance then gets the source's values copied, as they are) and
    no ``Manufacturer``, so that highdicom adds no Contributing Equipment item (the source's
    institution, station and device serial number)."""
    ref = copy.deepcopy(ds)  # Dataset.copy() shares its elements with ``ds``
    for key in TYPE2:
        setattr(ref, key, "")
    if "Manufacturer" in ref:
        del ref.Manufacturer
    return ref


def _code(concept):
    from highdicom.sr import CodedConcept

    value, scheme, meaning = concept
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _finding(row: dict, run: dict):
    """The finding's code for a labelled row: PNEUMONIA for the positive class, else Normal."""
    from pydicom.sr.codedict import codes

    return _code(PNEUMONIA) if row["label"] == run["class_names"][1] else codes.SCT.Normal


def _scope_value(row: dict, run: dict):
    from pydicom.sr.codedict import codes

    if row["in_scope"] is True:
        return codes.SCT.Yes
    if row["in_scope"] is False:
        return codes.SCT.No
    return codes.SCT.TestNotDone  # the gate is off, or the model has none


def _comment(row: dict, run: dict) -> str:
    if row["in_scope"] is False:
        return f"Not assessed: {row['reason']}. No finding is given for this image."
    if row["in_scope"] is None:
        why = {"off": "was turned off (--gate off)", "absent": "is absent from this model"}.get(
            run["gate"], "was not applied")
        return f"The input gate {why}: the image was labelled without checking it is a chest X-ray."
    return "The input gate found the image in the model's scope."


def _group(source, row: dict, run: dict):
    """The TID 1501 measurement group of one image."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    unit = codes.UCUM.NoUnits
    measurements = []
    if row["label"] is not None:
        measurements += [hd.sr.Measurement(name=codes.DCM.Probability, value=float(row["probability"]),
                                           unit=unit),
                         hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=run["threshold"], unit=unit)]
    if row.get("gate_score") is not None:
        measurements.append(hd.sr.Measurement(name=_code(GATE_SCORE), value=float(row["gate_score"]),
                                              unit=unit))
    algorithm = hd.sr.AlgorithmIdentification(
        name=_text(run["model_name"]), version=_text(run["model_version"]), manufacturer=MANUFACTURER,
        parameters=[f"threshold {run['threshold']:g}", f"input gate {run['gate']}"])
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="pneumokit finding"),
        finding_type=_finding(row, run) if row["label"] is not None else None,
        algorithm_id=algorithm, measurements=measurements or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(_code(IN_SCOPE), _scope_value(row, run))],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=_text(_comment(row, run)),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def _structured_report(source, row: dict, run: dict):
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes

    from ..core.config import __version__

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=run["device_uid"], name=MANUFACTURER, manufacturer_name=MANUFACTURER,
        model_name=_text(f"{run['model_name']}:{run['model_version']}", 64))
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ChestImaging,
                                     imaging_measurements=[_group(source, row, run)])
    series, number = _series(run, source.StudyInstanceUID, "sr")
    sr = hd.sr.Comprehensive3DSR(
        evidence=[_reference(source)], content=report[0], series_instance_uid=series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=number, manufacturer=MANUFACTURER, is_complete=True,
        series_description=_text(f"pneumokit {run['model_name']}:{run['model_version']} finding", 64),
        manufacturer_model_name=_text(f"{run['model_name']}:{run['model_version']}", 64),
        software_versions=_text(__version__, 64),
        coding_schemes=[CodingSchemeIdentificationItem(designator=SCHEME, name="pneumokit concepts",
                                                       responsible_organization="pneumokit")])
    sr.copy_patient_and_study_information(source)  # the source's own values, as they are
    return sr


def _secondary_capture(source, path, row: dict, run: dict):
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    from ..core.config import __version__
    from ..data.preprocessing import decode
    from .overlay import caption, overlay

    text = caption(row, run["threshold"], run["method"])
    pixels = np.asarray(overlay(decode(path, None), row["heatmap"], text))
    orientation = _orientation(source)
    series, number = _series(run, source.StudyInstanceUID, "sc")
    sc = hd.sc.SCImage.from_ref_dataset(
        _reference(source), pixels, "RGB", 8, "PATIENT", series_instance_uid=series,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=number, manufacturer=MANUFACTURER,
        patient_orientation=orientation or ("L", "F"), transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=_text(f"pneumokit {run['model_name']}:{run['model_version']} heatmap", 64),
        manufacturer_model_name=_text(f"{run['model_name']}:{run['model_version']}", 64),
        software_versions=_text(__version__, 64))
    if orientation is None:  # unknown in the source: empty (Type 2), not guessed
        sc.PatientOrientation = ""  # type: ignore[assignment]  # highdicom types it as a list
    sc.copy_patient_and_study_information(source)  # the source's own values, as they are
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = _text(f"heatmap overlay ({run['method']}) of the source image by pneumokit "
                                     f"{run['model_name']}:{run['model_version']}", 1024)
    sc.BurnedInAnnotation = "NO"  # the caption holds the prediction, nothing that identifies the patient
    return sc


def _orientation(source) -> tuple[str, str] | None:
    """The source's PatientOrientation as highdicom takes it, or None (missing or unusual)."""
    from highdicom import PatientOrientationValuesBiped

    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    try:
        first, second = (PatientOrientationValuesBiped(str(v)).value for v in value)
        return first, second
    except ValueError:
        return None


def _series(run: dict, study: str, kind: str) -> tuple[str, int]:
    """The run's series UID of ``kind`` in ``study`` and the next instance number in it."""
    from highdicom import UID

    key = (study, kind)
    uid, count = run["series"].get(key, (UID(), 0))
    run["series"][key] = (uid, count + 1)
    return uid, count + 1


def _text(value: str, limit: int | None = None) -> str:
    """Printable ASCII (any character set reads it), cut to ``limit`` characters."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text[:limit] if limit else text


def _checked_bytes(instance) -> bytes:
    """``instance`` as DICOM Part 10 bytes, after reading them back with pydicom."""
    import pydicom

    buffer = io.BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    back = pydicom.dcmread(io.BytesIO(data))
    if back.SOPInstanceUID != instance.SOPInstanceUID or back.SOPClassUID != instance.SOPClassUID:
        raise ConfigError(f"the DICOM file built for {instance.SOPInstanceUID} does not read back: "
                          "report this as a pneumokit bug")
    return data


def _write_new(folder: Path, stem: str, suffix: str, data: bytes, inputs: set[str]) -> Path:
    """Write ``data`` as ``STEM SUFFIX`` in ``folder`` (``STEM-2 SUFFIX``, ... when taken), whole and
    under a name no file has yet, so no existing file (an input, an earlier run's result) is ever
    written over."""
    for k in range(1, 10_000):
        target = folder / (f"{stem}{suffix}" if k == 1 else f"{stem}-{k}{suffix}")
        if os.path.realpath(target) in inputs or target.exists():
            continue
        try:
            with atomic_write(target, "wb", replace=False) as f:
                f.write(data)
        except FileExistsError:  # taken since the check
            continue
        return target
    raise ConfigError(f"--dicom-out: {printable(folder)} already holds {stem}{suffix} and 9998 "
                      "numbered copies; choose an empty folder")
