"""Recipes (issue 25, part 1): named presets of training settings, registered through a hook,
listed, applied by train and cv with options over single fields, and recorded in the version."""

import json

import pytest
from click.testing import CliRunner
from helpers import TINY_FIT, FakeEntryPoint, make_dataset, make_module

import pneumokit
from pneumokit.cli import main
from pneumokit.core.catalog import Recipe
from pneumokit.core.config import CVConfig, TrainConfig
from pneumokit.errors import CatalogError
from pneumokit.models.recipes import recipe_config
from pneumokit.registry.store import Registry
from pneumokit.testing import check_recipe

TINY = TINY_FIT


def test_fast_is_todays_defaults_field_by_field():
    """``train`` without --recipe is ``fast``: same settings, so the same model and figures."""
    assert recipe_config("fast") == TrainConfig()
    assert recipe_config("fast", CVConfig) == CVConfig()
    assert recipe_config("fast", epochs=3) == TrainConfig(epochs=3)


def test_list_recipes_shows_settings_cost_and_figures():
    out = CliRunner().invoke(main, ["list-recipes", "--json"])
    assert out.exit_code == 0, out.output
    fast = {r["name"]: r for r in json.loads(out.output)}["fast"]
    assert fast["settings"]["architecture"] == "cnn_optimized" and fast["plugin"] == "pneumokit"
    assert fast["figures"]["holdout_auc"] == 0.9913 and "bench/robustness.py" in fast["evidence"]
    table = CliRunner().invoke(main, ["list-recipes"])
    assert "cnn_optimized @ 128 px" in table.output and "holdout_auc 0.9913" in table.output


def test_fast_and_accurate_are_built_in_each_measured_and_buildable():
    recipes = {r.name: r for r in pneumokit.get_catalog().list_recipes()}
    assert recipes["accurate"].settings == {**recipes["fast"].settings, "members": 3}
    for name in ("fast", "accurate"):
        check_recipe(recipes[name])
        assert recipes[name].train_minutes and recipes[name].figures["holdout_auc"] > 0.5, name
    table = CliRunner().invoke(main, ["list-recipes", "accurate"])
    assert "3 x cnn_optimized @ 128 px" in table.output, table.output


def test_a_recipe_may_only_set_training_settings():
    with pytest.raises(CatalogError, match="seed cannot be set by a recipe"):
        Recipe("lucky", {"seed": 7})
    with pytest.raises(CatalogError, match="invalid recipe name"):
        Recipe("Fast!", {})


def test_an_unknown_recipe_is_one_line_with_a_hint():
    with pytest.raises(CatalogError, match="unknown recipe 'fats'. Did you mean 'fast'"):
        recipe_config("fats")
    out = CliRunner().invoke(main, ["train", "--recipe", "fats"])
    assert out.exit_code == 1 and "unknown recipe 'fats'" in out.output and "Traceback" not in out.output


def test_check_recipe_passes_fast_and_names_what_is_broken():
    check_recipe(pneumokit.get_catalog().recipe("fast"))
    with pytest.raises(AssertionError, match="recipe bad: unknown architecture 'no_net'"):
        check_recipe(Recipe("bad", {"architecture": "no_net"}))
    with pytest.raises(AssertionError, match="recipe bad: .*epochs"):
        check_recipe(Recipe("bad", {"epochs": 0}))
    with pytest.raises(AssertionError, match="recipe bad: unknown augmentation 'warp'"):
        check_recipe(Recipe("bad", {"augment": "warp"}))


def test_a_plugin_registers_a_recipe_through_the_hook(fake_entry_points):
    def recipes(register):
        register(Recipe("tiny_quick", {"architecture": "cnn_optimized", "image_size": 32, "epochs": 1},
                        description="for tests", train_minutes=0.1, figures={"holdout_auc": 0.5}))

    fake_entry_points(FakeEntryPoint("quick-plugin", "main", make_module("quick", register_recipes=recipes)))
    loaded = pneumokit.load_plugins()
    recipe = loaded.catalog.recipe("tiny_quick")
    assert recipe.plugin == "quick-plugin" and "tiny_quick" in {p.name: p for p in loaded.plugins}[
        "quick-plugin"].recipes
    check_recipe(recipe, loaded.catalog)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("recipes") / "chest_xray", per_class=12, size=40)


def test_train_records_the_recipe_and_what_was_overridden(data, tmp_path):
    reg = tmp_path / "reg"
    out = CliRunner().invoke(main, ["train", "--recipe", "fast", "--data", str(data), "--registry", str(reg),
                                    *TINY])
    assert out.exit_code == 0, out.output
    meta = Registry(reg).get("cnn_optimized").metadata
    assert meta["config"]["recipe"] == "fast"
    record = meta["recipe"]
    assert record["name"] == "fast" and record["plugin"] == "pneumokit"
    assert record["settings"]["epochs"] == 20  # the recipe in full, as it is defined
    assert record["overridden"] == {"epochs": 1, "image_size": 32, "batch_size": 8, "augment": "crop",
                                    "val_fraction": 0.25}
    shown = CliRunner().invoke(main, ["registry", "show", "cnn_optimized:1", "--registry", str(reg)])
    assert "recipe: fast" in shown.output, shown.output


def test_cv_resume_takes_the_recipe_again_or_refuses_another(data, tmp_path):
    run, reg = tmp_path / "run", tmp_path / "reg"
    common = ["--registry", str(reg), "--quiet"]
    first = CliRunner().invoke(main, ["cv", "--recipe", "fast", "--data", str(data), "--folds", "2",
                                      "--output", str(run), "--no-final", *TINY, *common])
    assert first.exit_code == 0, first.output
    assert json.loads((run / "run.json").read_text())["config"]["recipe"] == "fast"
    other = CliRunner().invoke(main, ["cv", "--resume", str(run), "--recipe", "fast", *common])
    assert other.exit_code == 1 and "epochs: 1 -> 20" in other.output  # fast's own 20 epochs differ
    folds = CliRunner().invoke(main, ["cv", "--resume", str(run), "--recipe", "fast", "--folds", "3",
                                      *TINY[:-3], *common])
    assert folds.exit_code == 1 and "folds: 2 -> 3" in folds.output
    again = CliRunner().invoke(main, ["cv", "--resume", str(run), "--recipe", "fast", *TINY[:-3], *common])
    assert again.exit_code == 0, again.output
