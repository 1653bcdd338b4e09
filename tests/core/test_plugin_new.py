"""`pneumokit plugin new` writes a plugin that installs, is found, and passes its own tests."""

import importlib.util
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pneumokit.cli import main


def test_new_plugin_installs_and_passes_its_own_tests(tmp_path):
    out = CliRunner().invoke(main, ["plugin", "new", "chestnet", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    plugin = tmp_path / "pneumokit-chestnet"
    assert sorted(str(p.relative_to(plugin)) for p in plugin.rglob("*") if p.is_file()) == [
        "README.md", "pneumokit_chestnet/__init__.py", "pneumokit_chestnet/layers.py", "pyproject.toml",
        "tests/test_contract.py"]
    site = tmp_path / "site"  # installed beside, not into, the test environment
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline,
                    "--target", str(site), str(plugin)], check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "KERAS_HOME": str(tmp_path / "keras")}
    listed = subprocess.run([sys.executable, "-m", "pneumokit.cli", "list-models", "chestnet*", "--json"],
                            env=env, capture_output=True, text=True, check=True)
    assert '"plugin": "pneumokit-chestnet"' in listed.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                          str(plugin / "tests")], cwd=plugin, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
    # every check ran: the architecture's six and the augmentation's, the fused one included
    assert "architecture:chestnet_cnn:exports_to_onnx" in subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(plugin / "tests")], cwd=plugin, env=env,
        capture_output=True, text=True).stdout


@pytest.mark.parametrize("name, words", [
    ("Bad-Name", "use lowercase letters and digits"),
    ("net_", "use lowercase letters and digits"),
    ("my__net", "use lowercase letters and digits"),
    ("pneumokit", "not 'pneumokit' or 'example'"),
    ("tiny", "its records tiny_cnn would clash with installed ones"),
    ("a" * 300, "plugin name is 300 characters long; at most 64"),  # issue 24, row 16
])
def test_bad_names_are_one_line(tmp_path, name, words):
    out = CliRunner().invoke(main, ["plugin", "new", name, "--dir", str(tmp_path)])
    assert out.exit_code == 1 and words in out.output and not any(tmp_path.iterdir())


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "pneumokit-chestnet").mkdir()
    (tmp_path / "pneumokit-chestnet" / "mine.txt").write_text("keep")
    out = CliRunner().invoke(main, ["plugin", "new", "chestnet", "--dir", str(tmp_path)])
    assert out.exit_code == 1 and "already exists" in out.output
    assert [p.name for p in tmp_path.iterdir()] == ["pneumokit-chestnet"]
    assert (tmp_path / "pneumokit-chestnet" / "mine.txt").read_text() == "keep"
