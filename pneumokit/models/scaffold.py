"""``pneumokit plugin new NAME``: a ready plugin distribution from the templates in
``pneumokit/models/templates/plugin`` (an architecture, an augmentation, tests that run
``pneumokit.testing``, a README), as ``llm``'s plugin template starts people off."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from ..core.config import __version__
from ..errors import ConfigError

TEMPLATE = "models/templates/plugin"
RESERVED = ("pneumokit", "example")
# a lowercase identifier whose underscores separate words, so "pneumokit-" + name with "-" for
# "_" is a valid distribution name (no "--", no trailing "-")
PLUGIN_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
# the name goes into file and folder names ("pneumokit-NAME", "pneumokit_NAME"), the records'
# names ("NAME_exposure") and a temporary folder's: 64 keeps each well under a file system's 255
MAX_PLUGIN_NAME = 64


def names(name: str) -> dict[str, str]:
    """The template's placeholders for plugin ``name``: name, dist, package, pneumokit_version."""
    if isinstance(name, str) and len(name) > MAX_PLUGIN_NAME:
        raise ConfigError(f"plugin name is {len(name)} characters long; at most {MAX_PLUGIN_NAME} (it names "
                          "the plugin's folder, package and files). E.g. 'chestnet'")
    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name) or name in RESERVED:
        raise ConfigError(f"plugin name {name!r}: use lowercase letters and digits, words joined by "
                          "single underscores, starting with a letter; not 'pneumokit' or 'example'. "
                          "E.g. 'chestnet'")
    return {"name": name, "dist": "pneumokit-" + name.replace("_", "-"), "package": "pneumokit_" + name,
            "pneumokit_version": __version__.split("+")[0]}


def new_plugin(name: str, directory: str | os.PathLike = ".") -> Path:
    """Write the plugin distribution ``DIRECTORY/pneumokit-NAME`` and return its folder. It is
    written to a temporary folder beside it and renamed into place: never half-written."""
    values = names(name)
    _check_free(name)
    parent = Path(directory)
    target = parent / values["dist"]
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} already exists; choose another name or --dir")
    if not parent.is_dir():
        raise ConfigError(f"--dir {parent}: no such folder; create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{values['dist']}.", dir=parent))
    try:
        _render(resources.files("pneumokit").joinpath(TEMPLATE), tmp, values)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the plugin's is not
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_free(name: str) -> None:
    """The records the template registers must not clash with installed ones."""
    from ..core.plugins import get_catalog

    catalog = get_catalog()
    taken = [n for n in (f"{name}_cnn", f"{name}_exposure")
             if n in catalog.architectures or n in catalog.augmentations]
    if taken:
        raise ConfigError(f"plugin name {name!r}: its records {', '.join(taken)} would clash with installed "
                          "ones (see `pneumokit list-models`); choose another name")


def _render(source, dest: Path, values: dict[str, str]) -> None:
    for entry in source.iterdir():
        name = values["package"] if entry.name == "package" else entry.name.removesuffix(".tmpl")
        if entry.is_dir():
            (dest / name).mkdir()
            _render(entry, dest / name, values)
        elif entry.name.endswith(".tmpl"):
            text = entry.read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            (dest / name).write_text(text, encoding="utf-8")
