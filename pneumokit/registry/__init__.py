"""The registry: ``store`` (numbered immutable versions, aliases, sha256; its file names are in
``pneumokit.core.layout``), ``provenance`` (what a version records), ``card`` (the model card)
and ``golden`` (the self-test vectors stored at export).

``from pneumokit.registry import Registry`` keeps working: a name not found here comes from
``registry.store`` (what ``pneumokit.registry`` was before the stages)."""


from ..core.moved import names_of  # noqa: E402

__getattr__ = names_of(__name__, "store")
