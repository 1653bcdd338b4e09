"""The whole plugin contract: pluggy hook specifications of pneumokit.

A plugin is a module named by an entry point in the ``pneumokit`` group. It
implements any of the hooks below with ``@pneumokit.hookimpl``. Each hook gets
a ``register`` callable and calls it once per record; return values are not used.
"""

import pluggy

PROJECT = "pneumokit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_architectures(register):
    """Register model architectures: call ``register(pneumokit.Architecture(...))``."""


@hookspec
def register_augmentations(register):
    """Register augmentations: call ``register(pneumokit.Augmentation(...))``."""


@hookspec
def register_recipes(register):
    """Register training recipes: call ``register(pneumokit.Recipe(...))``."""
