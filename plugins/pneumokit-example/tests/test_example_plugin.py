"""The example plugin: pneumokit's contract checks on everything it registers, its discovery
through the entry point, and what is its own (the noise's strength).

Needs the plugin installed (``pip install -e plugins/pneumokit-example``): discovery goes
through the installed distribution's metadata, as for any third-party plugin.
"""

import json
import subprocess
import sys

import numpy as np

import pneumokit
from pneumokit.testing import parametrize_plugin

DIST = "pneumokit-example"


@parametrize_plugin(DIST)
def test_pneumokit_contract(check):
    check()


def test_discovered_with_its_records():
    info = next(p for p in pneumokit.load_plugins(load=[DIST]).plugins if p.name == DIST)
    assert info.error is None and info.modules == ["pneumokit_example"]
    assert (info.architectures, info.augmentations) == (["tiny_cnn"], ["gaussian_noise"])


def test_listing_it_imports_neither_keras_nor_tensorflow():
    code = ("import json, sys, pneumokit; pneumokit.load_plugins(load=['pneumokit-example']); "
            "print(json.dumps(['keras' in sys.modules, 'tensorflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]


def test_noise_has_the_asked_strength():
    import tensorflow as tf

    noise = pneumokit.load_plugins(load=[DIST]).catalog.augmentation("gaussian_noise")
    layer = noise.build(stddev=4.0, seed=1)
    images = tf.fill((4, 48, 48, 1), 128.0)
    diff = np.asarray(layer(images, training=True)) - 128.0
    assert 3.0 < float(diff.std()) < 5.0
