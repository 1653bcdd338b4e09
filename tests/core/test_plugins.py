"""Plugin loading: isolation of broken plugins, duplicates, PNEUMOKIT_LOAD_PLUGINS, discovery."""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from click.testing import CliRunner
from helpers import FakeEntryPoint, make_module  # noqa: E402

import pneumokit
from pneumokit.cli import main

BUILTIN_ARCHITECTURES = {"cnn", "cnn_optimized", "efficientnet_b0", "mobilenet_v2", "vgg16"}


def tiny_build(input_shape, **options):
    raise AssertionError("not built in these tests")


def good_arch(register):
    register(pneumokit.Architecture(name="good_net", build=tiny_build, description="ok"))


def by_name(loaded):
    return {p.name: p for p in loaded.plugins}


def test_builtins_register_through_entry_points():
    eps = [ep for ep in metadata.entry_points(group="pneumokit") if ep.dist.name == "pneumokit"]
    assert eps, "pneumokit's own entry points are missing: is the package installed?"
    loaded = pneumokit.load_plugins(load="")
    assert set(loaded.catalog.architectures) == BUILTIN_ARCHITECTURES
    assert set(loaded.catalog.augmentations) >= {"flip", "crop", "brightness", "contrast",
                                                 "rotate", "zoom"}
    info = by_name(loaded)["pneumokit"]
    assert info.error is None
    assert {a.plugin for a in loaded.catalog.architectures.values()} == {"pneumokit"}


def test_plugin_that_fails_to_import_is_isolated(fake_entry_points):
    fake_entry_points(
        FakeEntryPoint("broken-plugin", "main", error=ImportError("No module named 'torch'")),
        FakeEntryPoint("good-plugin", "main", make_module("good", register_architectures=good_arch)),
    )
    loaded = pneumokit.load_plugins()
    infos = by_name(loaded)
    assert "No module named 'torch'" in infos["broken-plugin"].error
    assert infos["good-plugin"].error is None
    assert "good_net" in loaded.catalog.architectures
    assert BUILTIN_ARCHITECTURES <= set(loaded.catalog.architectures)


def test_hook_that_raises_and_invalid_records_are_isolated(fake_entry_points):
    def raising(register):
        raise RuntimeError("boom in hook")

    def invalid_name(register):
        register(pneumokit.Architecture(name="Bad Name!", build=tiny_build))

    def not_a_record(register):
        register({"name": "dict_net"})

    fake_entry_points(
        FakeEntryPoint("raising", "m", make_module("r", register_architectures=raising)),
        FakeEntryPoint("invalid", "m", make_module("i", register_architectures=invalid_name)),
        FakeEntryPoint("notrecord", "m", make_module("n", register_architectures=not_a_record)),
        FakeEntryPoint("good-plugin", "m", make_module("g", register_architectures=good_arch)),
    )
    loaded = pneumokit.load_plugins()
    infos = by_name(loaded)
    assert "boom in hook" in infos["raising"].error
    assert "invalid architecture name 'Bad Name!'" in infos["invalid"].error
    assert "expects a pneumokit.Architecture, got dict" in infos["notrecord"].error
    assert "good_net" in loaded.catalog.architectures
    assert "dict_net" not in loaded.catalog.architectures


def test_duplicate_name_keeps_builtin_and_names_both(fake_entry_points):
    def steal_cnn(register):
        register(pneumokit.Architecture(name="cnn", build=tiny_build, description="impostor"))

    fake_entry_points(
        FakeEntryPoint("copycat", "m", make_module("c", register_architectures=steal_cnn))
    )
    loaded = pneumokit.load_plugins()
    assert loaded.catalog.architecture("cnn").plugin == "pneumokit"
    error = by_name(loaded)["copycat"].error
    assert "duplicate architecture name 'cnn'" in error
    assert "'pneumokit'" in error and "'copycat'" in error


def test_duplicate_between_third_parties_first_wins(fake_entry_points):
    fake_entry_points(
        FakeEntryPoint("alpha", "m", make_module("a", register_architectures=good_arch)),
        FakeEntryPoint("beta", "m", make_module("b", register_architectures=good_arch)),
    )
    loaded = pneumokit.load_plugins()
    assert loaded.catalog.architecture("good_net").plugin == "alpha"
    assert "'alpha'" in by_name(loaded)["beta"].error
    assert "also registered by 'beta'" in by_name(loaded)["alpha"].error


def test_load_plugins_env_restricts(fake_entry_points, monkeypatch):
    def other_arch(register):
        register(pneumokit.Architecture(name="other_net", build=tiny_build))

    fake_entry_points(
        FakeEntryPoint("good-plugin", "m", make_module("g", register_architectures=good_arch)),
        FakeEntryPoint("other_plugin", "m", make_module("o", register_architectures=other_arch)),
    )
    monkeypatch.setenv("PNEUMOKIT_LOAD_PLUGINS", "")
    assert set(pneumokit.load_plugins().catalog.architectures) == BUILTIN_ARCHITECTURES
    monkeypatch.setenv("PNEUMOKIT_LOAD_PLUGINS", "other-plugin")
    names = set(pneumokit.load_plugins().catalog.architectures)
    assert "other_net" in names and "good_net" not in names
    monkeypatch.delenv("PNEUMOKIT_LOAD_PLUGINS")
    names = set(pneumokit.load_plugins().catalog.architectures)
    assert {"other_net", "good_net"} <= names


def test_cli_keeps_working_and_reports_broken_plugin(fake_entry_points):
    fake_entry_points(FakeEntryPoint("broken-plugin", "main", error=SyntaxError("bad syntax")))
    runner = CliRunner()
    result = runner.invoke(main, ["list-models", "--json"])
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in json.loads(result.stdout)} == BUILTIN_ARCHITECTURES
    assert "broken-plugin" in result.stderr
    result = runner.invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert "bad syntax" in records["broken-plugin"]["error"]
    assert records["pneumokit"]["error"] is None
    assert set(records["pneumokit"]["hooks"]) == {"register_architectures",
                                                  "register_augmentations", "register_recipes"}


def test_separately_installed_distribution_is_discovered_by_a_fresh_process(tmp_path):
    """A dist-info folder on sys.path is what `pip install` leaves: no monkeypatching here."""
    (tmp_path / "xray_extra.py").write_text(textwrap.dedent("""
        import pneumokit

        @pneumokit.hookimpl
        def register_architectures(register):
            register(pneumokit.Architecture(
                name="extra_net", build=lambda input_shape, **o: None,
                image_size=96, channels=1, description="from a separate distribution"))
    """))
    info = tmp_path / "xray_extra-2.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xray-extra\nVersion: 2.5\n")
    (info / "entry_points.txt").write_text("[pneumokit]\nextra = xray_extra\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("PNEUMOKIT_LOAD_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "pneumokit.cli", "list-models", "extra*", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )
    records = json.loads(out.stdout)
    assert records == [{
        "name": "extra_net", "plugin": "xray-extra", "plugin_version": "2.5",
        "description": "from a separate distribution", "image_size": 96, "channels": 1,
        "preprocessing": "unit", "options": {},
    }]
    env["PNEUMOKIT_LOAD_PLUGINS"] = ""
    out = subprocess.run(
        [sys.executable, "-m", "pneumokit.cli", "list-models", "extra*", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout) == []


def test_misspelled_hook_is_reported(fake_entry_points):
    fake_entry_points(
        FakeEntryPoint("typo", "m", make_module("t", register_architecture=good_arch))
    )
    error = by_name(pneumokit.load_plugins())["typo"].error
    assert "register_architecture is marked @hookimpl but is not a pneumokit hook" in error


def test_unknown_name_in_load_env_is_reported(fake_entry_points, monkeypatch):
    fake_entry_points()
    monkeypatch.setenv("PNEUMOKIT_LOAD_PLUGINS", "no-such-plugin")
    infos = by_name(pneumokit.load_plugins())
    assert "named in PNEUMOKIT_LOAD_PLUGINS" in infos["no-such-plugin"].error
    assert infos["pneumokit"].error is None


def test_same_plugin_registering_a_name_twice(fake_entry_points):
    def twice(register):
        good_arch(register)
        good_arch(register)

    fake_entry_points(FakeEntryPoint("twice", "m", make_module("w", register_architectures=twice)))
    loaded = pneumokit.load_plugins()
    assert "registered twice by 'twice'" in by_name(loaded)["twice"].error
    assert "good_net" in loaded.catalog.architectures


def test_preprocessing_must_fit_channels():
    with pytest.raises(pneumokit.CatalogError, match="3-channel input but channels=1"):
        pneumokit.Architecture(name="x", build=tiny_build, channels=1, preprocessing="caffe")
