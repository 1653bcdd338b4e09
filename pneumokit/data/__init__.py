"""Data: from files to model inputs. ``dataset`` and ``index`` (``scan``: folders or a manifest
into the index of images), ``manifest`` (a hospital's table), ``splits`` (patient-grouped folds),
``dicom`` and ``decoding``, ``preprocessing`` (the one rule training and every runtime apply),
``contract`` (what an ONNX file must declare), ``stress`` (acquisition shifts for the stress
bench) and the bundled ``demo`` X-rays.

``from pneumokit.data import scan`` keeps working: a name not found here comes from ``data.dataset``
(what ``pneumokit.data`` was before the stages), which holds ``data.index``'s records too."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module(f"{__name__}.dataset")

    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'pneumokit.data' has no attribute {name!r}") from None
