"""Data: from files to model inputs. ``dataset`` and ``index`` (``scan``: folders or a manifest
into the index of images), ``manifest`` (a hospital's table), ``splits`` (patient-grouped folds),
``dicom`` and ``decoding``, ``preprocessing`` (the one rule training and every runtime apply),
``contract`` (what an ONNX file must declare), ``stress`` (acquisition shifts for the stress
bench) and the bundled ``demo`` X-rays.

``from pneumokit.data import scan`` keeps working: a name not found here comes from ``data.dataset``
(what ``pneumokit.data`` was before the stages), which holds ``data.index``'s records too."""


from ..core.moved import names_of  # noqa: E402

__getattr__ = names_of(__name__, "dataset")
