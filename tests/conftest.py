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
