"""Training recipes: named, documented presets of training settings (``--recipe NAME``).

A recipe fixes any of ``catalog.RECIPE_FIELDS`` (architecture, image size, epochs,
schedule, augmentation, threshold rule, ...); options given on the command line, or as
keyword arguments to ``recipe_config``, override single fields. The built-in recipes are
registered here through the same ``register_recipes`` hook a plugin uses. Every registered
version records its recipe by name and in full (``metadata.json``'s ``recipe``).
"""

from __future__ import annotations

from ..core import config as C
from ..hookspecs import hookimpl

# Today's defaults, field by field: ``pneumokit train`` without --recipe is ``fast``
FAST = {"architecture": C.DEFAULT_ARCHITECTURE, "image_size": None, "members": 1, "epochs": C.DEFAULT_EPOCHS,
        "batch_size": C.DEFAULT_BATCH_SIZE, "augment": C.DEFAULT_AUGMENT,
        "learning_rate": C.DEFAULT_LEARNING_RATE, "lr_schedule": C.DEFAULT_LR_SCHEDULE,
        "bn_refresh": C.DEFAULT_BN_REFRESH, "threshold_rule": C.DEFAULT_THRESHOLD_RULE,
        "patience": C.DEFAULT_PATIENCE, "val_fraction": C.DEFAULT_VAL_FRACTION}
# fast's networks, three of them from seeds SEED, SEED+1, SEED+2, their logits averaged (a deep ensemble)
ACCURATE = {**FAST, "members": 3}


@hookimpl
def register_recipes(register):
    from ..core.catalog import Recipe

    register(Recipe(
        name=C.DEFAULT_RECIPE, settings=FAST,
        description="cnn_optimized at 128 px, 20 epochs, cosine schedule, acquisition-shift augmentation, "
                    "calibrated 0.5 threshold: the default",
        train_minutes=12.6,  # pneumokit train on the 5,232 shared images, 2 cores, 2026-12-06: 758.6 s
        figures={"holdout_auc": 0.9913, "worst_shift_auc": 0.9834, "worst_shift_specificity": 0.885,
                 "worst_shift_sensitivity": 0.870, "holdout_auc_second_split": 0.9875,
                 "worst_shift_auc_second_split": 0.9810, "worst_shift_specificity_second_split": 0.896,
                 "worst_shift_sensitivity_second_split": 0.826},
        evidence="figures: bench/robustness.py (seed 7 and seed 11 splits), docs/performance.md, "
                 "'Models on new patients': held-out patients, 12 acquisition shifts; minutes: "
                 "pneumokit train on the 5,232 shared images, 2 cores"))
    register(Recipe(
        name="accurate", settings=ACCURATE,
        description="fast's network three times from three seeds, logits averaged (a deep ensemble): "
                    "3x the training time, 2-3x the inference time",
        train_minutes=36.1,  # pneumokit train --recipe accurate, the 5,232 shared images, 2 cores: 2,164 s
        figures={"holdout_auc": 0.9918, "worst_shift_auc": 0.9846, "holdout_auc_second_split": 0.9904,
                 "worst_shift_auc_second_split": 0.9827, "worst_shift_specificity_second_split": 0.870,
                 "worst_shift_sensitivity_second_split": 0.852},
        evidence="figures: bench/robustness.py --recipes default_members5 --seed 7 (the mean of its first "
                 "3 networks, --reuse) and --recipes default_members3 --seed 11 (second split), "
                 "docs/performance.md 'Recipes'; minutes: pneumokit train --recipe accurate on the 5,232 "
                 "shared images, 2 cores"))


def recipe_config(name: str = C.DEFAULT_RECIPE, cls=None, **overrides):
    """A ``TrainConfig`` (or ``cls``, e.g. ``CVConfig``) from recipe ``name``, with ``overrides``
    (any config field) over its settings: ``recipe_config("fast", epochs=3)``."""
    from ..core.plugins import get_catalog

    recipe = get_catalog().recipe(name)
    return (cls or C.TrainConfig)(**{**recipe.settings, **overrides, "recipe": recipe.name})


def recipe_record(config) -> dict:
    """What a registered version records of its recipe: the name, the plugin, the recipe's own
    settings, and the settings this run changed (``overridden``: {field: value used})."""
    from ..core.catalog import RECIPE_FIELDS, CatalogError
    from ..core.plugins import get_catalog

    try:
        recipe = get_catalog().recipe(config.recipe)
    except CatalogError:  # a plugin's recipe that is no longer installed: the name is what is left
        return {"name": config.recipe, "plugin": None, "settings": None, "overridden": None}
    used, implied = config.to_dict(), {**C.TrainConfig().to_dict(), **recipe.settings}
    overridden = {k: used[k] for k in RECIPE_FIELDS if used[k] != implied[k]}
    return {"name": recipe.name, "plugin": recipe.plugin, "plugin_version": recipe.plugin_version,
            "settings": dict(recipe.settings), "overridden": overridden}
