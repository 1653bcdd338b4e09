"""The registry: ``store`` (numbered immutable versions, aliases, sha256; its file names are in
``pneumokit.core.layout``), ``provenance`` (what a version records), ``card`` (the model card)
and ``golden`` (the self-test vectors stored at export).

``from pneumokit.registry import Registry`` keeps working: a name not found here comes from
``registry.store`` (what ``pneumokit.registry`` was before the stages)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    store = importlib.import_module(f"{__name__}.store")

    try:
        return getattr(store, name)
    except AttributeError:
        raise AttributeError(f"module 'pneumokit.registry' has no attribute {name!r}") from None
