"""Architecture, Augmentation and Recipe records, and look-up by name or wildcard.

These records are what plugins register. The host fills in ``plugin`` and
``plugin_version``; a plugin author sets the rest.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CatalogError, ConfigError, PluginError, PneumokitError, one_line

BUILTIN_PLUGIN = "pneumokit"  # the distribution whose entry points are the built-ins
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Preprocessing presets an architecture may ask for. Pixels are 8-bit (0..255)
# after decoding; the model sees ``(pixel * scale - mean) / std`` per channel.
PREPROCESSING_PRESETS: dict[str, dict[str, Any]] = {
    # x / 255 -> [0, 1]
    "unit": {"scale": 1 / 255.0, "mean": [0.0], "std": [1.0]},
    # raw 0..255: the model normalises inside (e.g. Keras EfficientNet)
    "raw": {"scale": 1.0, "mean": [0.0], "std": [1.0]},
    # x / 127.5 - 1 -> [-1, 1] (MobileNetV2, "tf" mode of keras.applications)
    "tf": {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0]},
    # ImageNet "caffe" mode (VGG16): BGR mean subtraction. Chest X-rays are
    # grayscale repeated into 3 channels, so channel order does not matter.
    "caffe": {"scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
}




def validate_name(name: object, kind: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CatalogError(
            f"invalid {kind} name {name!r}: use a lowercase identifier "
            "(letters, digits, underscores; starting with a letter), e.g. 'my_cnn'"
        )
    return name


@dataclass(frozen=True)
class Architecture:
    """A model architecture a plugin offers.

    Parameters
    ----------
    name : lowercase identifier, e.g. ``"cnn_optimized"``.
    build : ``build(input_shape, **options) -> keras.Model`` ending in one
        sigmoid unit (float32 under any precision policy).
    image_size : default square input side in pixels.
    channels : channels the model expects, 1 (grayscale) or 3. X-rays are
        decoded as grayscale and repeated into 3 channels when 3 are expected.
    preprocessing : a key of ``PREPROCESSING_PRESETS`` ("unit", "raw", "tf",
        "caffe") saying how 8-bit pixels are scaled before the model.
    description : one line for listings.
    options : the builder's keyword options and their defaults, for listings.
    """

    name: str
    build: Callable[..., Any]
    image_size: int = 128
    channels: int = 1
    preprocessing: str = "unit"
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""
    plugin_version: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name, "architecture")
        if not callable(self.build):
            raise CatalogError(f"architecture {self.name!r}: build must be callable")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 4096:
            raise CatalogError(
                f"architecture {self.name!r}: image_size must be an int in 8..4096, "
                f"got {self.image_size!r}"
            )
        if self.channels not in (1, 3):
            raise CatalogError(
                f"architecture {self.name!r}: channels must be 1 or 3, got {self.channels!r}"
            )
        if self.preprocessing not in PREPROCESSING_PRESETS:
            raise CatalogError(
                f"architecture {self.name!r}: unknown preprocessing {self.preprocessing!r}; "
                f"choose one of {sorted(PREPROCESSING_PRESETS)}"
            )
        means = len(PREPROCESSING_PRESETS[self.preprocessing]["mean"])
        if means not in (1, self.channels):
            raise CatalogError(
                f"architecture {self.name!r}: preprocessing {self.preprocessing!r} is for "
                f"{means}-channel input but channels={self.channels}"
            )

    def check_options(self, options: Mapping[str, Any]) -> None:
        """``ConfigError`` listing the valid options if ``options`` has a key the builder lacks."""
        try:
            params = list(inspect.signature(self.build).parameters.values())[1:]  # after input_shape
        except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
            return
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if any(p.kind == p.VAR_KEYWORD for p in params):
            if not self.options:
                return  # takes anything, declares nothing
            named |= set(self.options)
        unknown = sorted(set(options) - named)
        if unknown:
            valid = ", ".join(sorted(named)) or "none"
            raise ConfigError(f"architecture {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                              f"its options: {valid} (see `pneumokit list-models --json`)")

    def build_model(self, input_shape: tuple[int, int, int], options: Mapping[str, Any]):
        """``build(input_shape, **options)``; a failure is one ``PluginError`` naming the
        architecture and its plugin (a ``PneumokitError`` passes through as it is)."""
        self.check_options(options)
        if self.plugin in ("", BUILTIN_PLUGIN):  # pneumokit's own: a bad option value is the
            try:  # user's to fix; any other failure is a bug and keeps its traceback
                return self.build(input_shape, **options)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, PneumokitError) or not options:
                    raise
                raise ConfigError(f"architecture {self.name!r} cannot be built with options {dict(options)}: "
                                  f"{one_line(exc)}") from exc
        try:
            return self.build(input_shape, **options)
        except (PneumokitError, KeyboardInterrupt, MemoryError):
            raise
        except BaseException as exc:  # a plugin's SystemExit must not stop pneumokit either
            where = f"plugin {self.plugin} {self.plugin_version}".rstrip() if self.plugin else "no plugin"
            raise PluginError(f"architecture {self.name!r} ({where}) failed to build with options "
                              f"{dict(options)}: {type(exc).__name__}: {one_line(exc)}"
                              ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plugin": self.plugin,
            "plugin_version": self.plugin_version,
            "description": self.description,
            "image_size": self.image_size,
            "channels": self.channels,
            "preprocessing": self.preprocessing,
            "options": dict(self.options),
        }


@dataclass(frozen=True)
class Augmentation:
    """A training-time augmentation a plugin offers.

    Parameters
    ----------
    name : lowercase identifier, e.g. ``"flip"``.
    build : ``build(**params) -> keras.layers.Layer``. The layer gets a batch
        of float32 images with values in [0, 255] and must keep shape, dtype
        and range; it must be the identity when called with ``training=False``.
    description : one line for listings.
    params : the builder's parameters and their defaults.
    """

    name: str
    build: Callable[..., Any]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""
    plugin_version: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name, "augmentation")
        if not callable(self.build):
            raise CatalogError(f"augmentation {self.name!r}: build must be callable")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "plugin": self.plugin,
            "plugin_version": self.plugin_version,
            "description": self.description,
            "params": dict(self.params),
        }


# The settings a recipe may fix: what decides how a model is trained, not where its data or
# registry are (``seed``, ``skip_bad``, ``jpeg_draft`` and cv's fold settings stay the user's)
RECIPE_FIELDS = ("architecture", "image_size", "members", "epochs", "batch_size", "augment", "learning_rate",
                 "lr_schedule", "bn_refresh", "threshold_rule", "target_sensitivity", "patience",
                 "val_fraction", "options")


@dataclass(frozen=True)
class Recipe:
    """A named, documented training recipe: settings over ``TrainConfig``'s fields.

    Parameters
    ----------
    name : lowercase identifier, e.g. ``"fast"``.
    settings : values for any of ``RECIPE_FIELDS``; the rest keep their defaults.
    description : one line for listings: what the recipe trades for what.
    train_minutes : measured minutes of ``pneumokit train`` on the shared data (5,232 images)
        on 2 CPU cores, or None when not measured.
    figures : measured figures, e.g. ``{"holdout_auc": 0.9913}``, named as in ``evidence``.
    evidence : where the figures come from (a document and section, a bench command).
    """

    name: str
    settings: Mapping[str, Any]
    description: str = ""
    train_minutes: float | None = None
    figures: Mapping[str, float] = field(default_factory=dict)
    evidence: str = ""
    plugin: str = ""
    plugin_version: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name, "recipe")
        if not isinstance(self.settings, Mapping):
            raise CatalogError(f"recipe {self.name!r}: settings must be a mapping")
        unknown = sorted(set(self.settings) - set(RECIPE_FIELDS))
        if unknown:
            raise CatalogError(f"recipe {self.name!r}: {', '.join(unknown)} cannot be set by a recipe; "
                               f"use {', '.join(RECIPE_FIELDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.plugin, "plugin_version": self.plugin_version,
                "description": self.description, "settings": dict(self.settings),
                "train_minutes": self.train_minutes, "figures": dict(self.figures),
                "evidence": self.evidence}


@dataclass
class Catalog:
    """Everything the loaded plugins registered, by name."""

    architectures: dict[str, Architecture] = field(default_factory=dict)
    augmentations: dict[str, Augmentation] = field(default_factory=dict)
    recipes: dict[str, Recipe] = field(default_factory=dict)

    def list_recipes(self, pattern: str | None = None) -> list[Recipe]:
        return _filter(self.recipes, pattern)

    def recipe(self, name: str) -> Recipe:
        return _get(self.recipes, name, "recipe", "pneumokit list-recipes")

    def list_architectures(self, pattern: str | None = None) -> list[Architecture]:
        return _filter(self.architectures, pattern)

    def list_augmentations(self, pattern: str | None = None) -> list[Augmentation]:
        return _filter(self.augmentations, pattern)

    def architecture(self, name: str) -> Architecture:
        return _get(self.architectures, name, "architecture", "pneumokit list-models")

    def augmentation(self, name: str) -> Augmentation:
        return _get(self.augmentations, name, "augmentation", "pneumokit list-augmentations")


def _filter(records: dict, pattern: str | None) -> list:
    names = sorted(records)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return [records[n] for n in names]


def _get(records: dict, name: str, kind: str, listing: str):
    try:
        return records[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(records), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CatalogError(
            f"unknown {kind} {name!r}.{hint} Run `{listing}` to see the installed ones."
        ) from None
