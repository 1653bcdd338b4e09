"""Test set-up for the example plugin: isolate Keras's home and keep TensorFlow quiet.

This runs before any test module imports Keras, which is what matters: Keras
writes $KERAS_HOME/keras.json (default ~/.keras) the first time it is imported.
"""

import os
import tempfile

os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="pneumokit-example-keras-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
