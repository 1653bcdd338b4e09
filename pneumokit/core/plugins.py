"""Plugin loading: entry points of group ``pneumokit``, each isolated.

A plugin that fails to import, raises in a hook or registers an invalid or
duplicate record is recorded with its error; every other plugin still loads.
Built-ins (the ``pneumokit`` distribution's own entry points) load first and
win any name clash.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata

import pluggy

from .. import hookspecs
from ..errors import one_line
from .catalog import BUILTIN_PLUGIN, Architecture, Augmentation, Catalog, CatalogError, Recipe

ENTRY_POINT_GROUP = "pneumokit"
BUILTIN = BUILTIN_PLUGIN
LOAD_ENV = "PNEUMOKIT_LOAD_PLUGINS"

_HOOKS = {
    "register_architectures": (Architecture, "architectures"),
    "register_augmentations": (Augmentation, "augmentations"),
    "register_recipes": (Recipe, "recipes"),
}


@dataclass
class PluginInfo:
    """One plugin distribution: what it implements, registered, and any error."""

    name: str
    version: str
    modules: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=list)
    augmentations: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.name == BUILTIN,
            "modules": self.modules,
            "hooks": sorted(set(self.hooks)),
            "architectures": self.architectures,
            "augmentations": self.augmentations,
            "recipes": self.recipes,
            "error": self.error,
        }


@dataclass
class LoadedPlugins:
    catalog: Catalog
    plugins: list[PluginInfo]


def _normalize(dist_name: str) -> str:
    """PEP 503: runs of ``-``, ``_`` and ``.`` are one ``-``; case does not count."""
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def allowed_plugins(value: str | None) -> set[str] | None:
    """Parse ``PNEUMOKIT_LOAD_PLUGINS``: None = all, "" = built-ins only."""
    if value is None:
        return None
    return {_normalize(v.strip()) for v in value.split(",") if v.strip()}


def _entry_points(allowed: set[str] | None) -> list[tuple[str, str, metadata.EntryPoint]]:
    seen: set[tuple[str, str]] = set()
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else ""
        key = (_normalize(dist), ep.name)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        is_builtin = _normalize(dist) == BUILTIN
        if not is_builtin and allowed is not None and _normalize(dist) not in allowed:
            continue
        found.append((dist, version, ep))
    # Built-ins first, so that they win name clashes whatever the install order.
    found.sort(key=lambda item: (_normalize(item[0]) != BUILTIN, _normalize(item[0]), item[2].name))
    return found


def load_plugins(load: Iterable[str] | str | None = None) -> LoadedPlugins:
    """Load every plugin and build the catalog.

    Parameters
    ----------
    load : restrict third-party plugins to these distribution names (a list or
        a comma-separated string); ``""`` or ``[]`` loads the built-ins only;
        ``None`` reads ``PNEUMOKIT_LOAD_PLUGINS`` and, when unset, loads all.
    """
    if load is None:
        allowed = allowed_plugins(os.environ.get(LOAD_ENV))
    elif isinstance(load, str):
        allowed = allowed_plugins(load)
    else:
        allowed = {_normalize(n) for n in load}

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    owner: dict[str, PluginInfo] = {}  # pluggy plugin name -> distribution info

    for dist, version, ep in _entry_points(allowed):
        info = infos.setdefault(_normalize(dist), PluginInfo(name=dist, version=version))
        info.modules.append(ep.value)
        try:
            module = ep.load()
            plugin_name = f"{dist}:{ep.name}"
            pm.register(module, name=plugin_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # isolation: any failure, even sys.exit(), is reported
            info.errors.append(f"failed to load {ep.value!r}: {type(exc).__name__}: {one_line(exc)}")
            continue
        owner[plugin_name] = info
        for attr in dir(module):
            if attr not in _HOOKS and pm.parse_hookimpl_opts(module, attr) is not None:
                info.errors.append(
                    f"{ep.value}.{attr} is marked @hookimpl but is not a pneumokit hook; "
                    f"the hooks are {', '.join(_HOOKS)}"
                )

    if allowed:
        for name in sorted(allowed - set(infos)):
            infos[name] = PluginInfo(
                name=name, version="",
                errors=[f"named in {LOAD_ENV} but no installed distribution has "
                        f"'{ENTRY_POINT_GROUP}' entry points by that name"],
            )

    catalog = Catalog()
    for hook_name, (record_type, attr) in _HOOKS.items():
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        # pluggy calls last-registered first; keep registration order instead
        for impl in sorted(impls, key=lambda i: list(owner).index(i.plugin_name)):
            info = owner[impl.plugin_name]
            info.hooks.append(hook_name)
            _call_hook(impl, info, record_type, getattr(catalog, attr), attr, infos)
    return LoadedPlugins(catalog=catalog, plugins=list(infos.values()))


def _call_hook(impl, info: PluginInfo, record_type, records: dict, attr: str, infos) -> None:
    pending: list = []

    def register(record) -> None:
        if not isinstance(record, record_type):
            raise CatalogError(
                f"register() in {impl.function.__name__} expects a pneumokit."
                f"{record_type.__name__}, got {type(record).__name__}"
            )
        pending.append(dataclasses.replace(record, plugin=info.name, plugin_version=info.version))

    try:
        impl.function(register=register)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # even sys.exit() in a hook is reported, not obeyed
        info.errors.append(f"{impl.function.__name__} failed: {type(exc).__name__}: {one_line(exc)}")
        return
    for record in pending:
        existing = records.get(record.name)
        if existing is not None:
            kind = attr[:-1]
            if existing.plugin == info.name:
                info.errors.append(f"duplicate {kind} name {record.name!r}: registered twice by "
                                   f"{info.name!r}; kept the first")
                continue
            info.errors.append(
                f"duplicate {kind} name {record.name!r}: registered by both "
                f"{existing.plugin!r} and {info.name!r}; kept the one from {existing.plugin!r}"
            )
            other = infos.get(_normalize(existing.plugin))
            if other is not None and _normalize(other.name) != BUILTIN:
                other.errors.append(f"{kind} {record.name!r} is also registered by {info.name!r}")
            continue
        records[record.name] = record
        getattr(info, attr).append(record.name)


@lru_cache(maxsize=8)
def _cached(load_env: str | None) -> LoadedPlugins:
    return load_plugins(load_env if load_env is not None else None)


def loaded() -> LoadedPlugins:
    """The plugins for this process (cached per value of ``PNEUMOKIT_LOAD_PLUGINS``)."""
    value = os.environ.get(LOAD_ENV)
    return _cached(value)


def get_catalog() -> Catalog:
    """The catalog of every loaded architecture and augmentation."""
    return loaded().catalog
