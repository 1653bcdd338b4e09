"""The listing commands, --version and --help."""

import json

import pytest
from click.testing import CliRunner

import pneumokit
from pneumokit.cli import main


@pytest.fixture
def run(monkeypatch, fresh_plugins):
    monkeypatch.setenv("PNEUMOKIT_LOAD_PLUGINS", "")
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_list_models_table_and_json(run):
    table = run("list-models").stdout
    assert table.splitlines()[0].split()[:4] == ["NAME", "IMAGE_SIZE", "CHANNELS", "PLUGIN"]
    assert "cnn_optimized" in table
    records = json.loads(run("list-models", "--json").stdout)
    vgg = next(r for r in records if r["name"] == "vgg16")
    assert vgg["plugin"] == "pneumokit" and vgg["image_size"] == 224 and vgg["channels"] == 3
    assert vgg["description"]


def test_list_models_pattern(run):
    names = [r["name"] for r in json.loads(run("list-models", "*net*", "--json").stdout)]
    assert names == ["efficientnet_b0", "mobilenet_v2"]


def test_list_augmentations(run):
    records = json.loads(run("list-augmentations", "--json").stdout)
    assert {"flip", "crop", "brightness", "contrast", "rotate", "zoom"} <= {
        r["name"] for r in records}
    assert all(r["plugin"] and r["description"] for r in records)
    assert "fraction=0.9" in run("list-augmentations", "cr*").stdout


def test_version(run):
    assert pneumokit.__version__ in run("--version").stdout


@pytest.mark.parametrize("command", [[], ["list-models"], ["list-augmentations"], ["plugins"]])
def test_help(run, command):
    assert "Usage:" in run(*command, "--help").stdout
