"""Data: from files to model inputs. ``scan`` (folders and the index), ``manifest`` (a hospital's
table), ``splits`` (patient-grouped folds), ``dicom`` and ``decoding``, ``preprocessing`` (the one
rule training and every runtime apply), ``contract`` (what an ONNX file must declare), ``stress``
(acquisition shifts for the stress bench) and the bundled ``demo`` X-rays.

``from pneumokit.data import scan`` keeps working: the names below come from ``data.scan``."""

_SCAN = ("scan", "DatasetError", "DatasetIndex", "ScanResult", "check_report", "class_weights", "patient_id",
         "prepare_cv_data")


def __getattr__(name):
    if name in _SCAN:
        from . import scan as module

        return getattr(module, name)
    raise AttributeError(f"module 'pneumokit.data' has no attribute {name!r}")
