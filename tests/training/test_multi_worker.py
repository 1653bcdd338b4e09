"""Multi-worker training (issue 13): why pneumokit refuses it, checked against the real stack.

Keras 3's ``model.fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585). The slow test below starts two real workers on 127.0.0.1 with a
generated TF_CONFIG and plain Keras (no pneumokit), and checks that this is still so; when it
fails, Keras has fixed it and pneumokit's refusal in ``device.plan`` should be lifted.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from pneumokit.cli import main

PLAIN_KERAS = textwrap.dedent("""
    import numpy as np, tensorflow as tf, keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, (x.sum(1) > 4).astype("float32"))).batch(16)
    model.fit(ds, epochs=1, verbose=0)
    print("FIT OK", keras.__version__, tf.__version__)
""")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_keras_fit_still_fails_under_multi_worker_mirrored_strategy(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    configs = [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)]
    workers = [subprocess.Popen([sys.executable, "-c", PLAIN_KERAS], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**env, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config})
               for tf_config in configs]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert "FIT OK" not in stdout, ("Keras now trains under MultiWorkerMirroredStrategy: lift the "
                                        "refusal in pneumokit.training.device.plan and test pneumokit on it")
        assert worker.returncode != 0 and "PerReplica" in stderr, stderr[-2000:]


def test_pneumokit_refuses_a_multi_worker_tf_config_in_one_line(tmp_path, monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    result = CliRunner().invoke(main, ["cv", "--folds", "2", "--epochs", "1", "--quiet", "--output",
                                       str(tmp_path / "run"), "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "keras-team/keras#20585" in result.output and "--only-fold" in result.output
    assert not (tmp_path / "run").exists()
