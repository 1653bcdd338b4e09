"""The registry: ``store`` (numbered immutable versions, aliases, sha256; its file names are in
``pneumokit.core.layout``), ``provenance`` (what a version records), ``card`` (the model card)
and ``golden`` (the self-test vectors stored at export).

``from pneumokit.registry import Registry`` keeps working: the names below come from ``store``."""

_STORE = ("Registry", "ModelVersion", "parse_ref", "validate_name", "resolve_root", "read_metadata",
          "sha256_file", "REGISTRY_ENV")


def __getattr__(name):
    if name in _STORE:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'pneumokit.registry' has no attribute {name!r}")
