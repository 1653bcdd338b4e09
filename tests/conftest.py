"""Test set-up: isolate Keras's home, keep TensorFlow quiet, share tiny fixtures."""

import os
import tempfile

# Keras writes ~/.keras/keras.json on import: keep tests away from the user's home.
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="pneumokit-keras-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture
def fresh_plugins():
    """Forget the cached catalog before and after a test that changes plugins."""
    from pneumokit import plugins

    plugins._cached.cache_clear()
    yield plugins
    plugins._cached.cache_clear()


@pytest.fixture
def fake_entry_points(monkeypatch, fresh_plugins):
    """Install fake third-party entry points beside the real built-in ones."""
    from importlib import metadata

    real = [ep for ep in metadata.entry_points(group="pneumokit") if ep.dist.name == "pneumokit"]

    def install(*fakes):
        monkeypatch.setattr(fresh_plugins.metadata, "entry_points", lambda group: [*real, *fakes])

    return install


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Two tiny trained cnn_optimized models: ``heat:1`` exported with ``--heatmap``, ``plain:1``
    without; with their synthetic data and a few test images (shared by explain and serve tests)."""
    import json

    from click.testing import CliRunner
    from helpers import TINY_TRAIN, make_dataset

    from pneumokit.cli import main

    base = tmp_path_factory.mktemp("exported")
    data = make_dataset(base / "chest_xray", per_class=12, size=72, splits=("train", "test"))
    registry = base / "registry"
    runner = CliRunner()
    for name in ("heat", "plain"):
        out = runner.invoke(main, ["train", "--data", str(data), "--registry", str(registry), "--name", name,
                                   *TINY_TRAIN])
        assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["export", "heat:1", "--heatmap", "--registry", str(registry), "--json"])
    assert out.exit_code == 0, out.output
    out_plain = runner.invoke(main, ["export", "plain:1", "--registry", str(registry)])
    assert out_plain.exit_code == 0, out_plain.output
    return {"base": base, "data": data, "registry": registry, "export": json.loads(out.stdout),
            "images": sorted((data / "test").rglob("*.jpeg"))[::5]}
