"""Device decisions from injected facts, and a real MirroredStrategy fit on two logical CPUs."""

import subprocess
import sys
import textwrap

import pytest

from pneumokit.training.device import DeviceFacts, plan

V100 = {"name": "Tesla V100", "compute_capability": (7, 0)}
P100 = {"name": "Tesla P100", "compute_capability": (6, 0)}
H100 = {"name": "H100", "compute_capability": (9, 0)}


def test_cpu_only():
    p = plan(DeviceFacts())
    assert (p.gpus, p.memory_growth, p.precision, p.xla, p.strategy) == (0, False, "float32", False,
                                                                        "default")
    assert any("10x slower" in r for r in p.reasons)


def test_one_modern_gpu():
    p = plan(DeviceFacts(gpus=(H100,)))
    assert (p.memory_growth, p.precision, p.xla, p.strategy) == (True, "mixed_float16", True, "default")


def test_old_gpu_stays_float32():
    p = plan(DeviceFacts(gpus=(P100,)))
    assert p.precision == "float32" and p.xla
    mixed_fleet = plan(DeviceFacts(gpus=(V100, P100)))
    assert mixed_fleet.precision == "float32" and mixed_fleet.strategy == "mirrored"


def test_several_gpus_mirror():
    p = plan(DeviceFacts(gpus=(V100, V100, V100)))
    assert p.strategy == "mirrored" and p.precision == "mixed_float16"
    assert any("MirroredStrategy over 3 GPUs" in r for r in p.reasons)


def test_tf_config_cluster_is_refused_with_the_alternative():
    from pneumokit.errors import DeviceError

    cfg = {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(DeviceError, match=r"2 workers.*keras-team/keras#20585.*--only-fold"):
        plan(DeviceFacts(gpus=(H100,), tf_config=cfg))
    single = plan(DeviceFacts(tf_config={"cluster": {"worker": ["h:1"]}, "task": {}}))
    assert single.strategy == "default"


def test_explicit_choices_win():
    p = plan(DeviceFacts(), precision="mixed", xla="on")
    assert p.precision == "mixed_float16" and p.xla
    p = plan(DeviceFacts(gpus=(H100,)), precision="float32", xla="off")
    assert p.precision == "float32" and not p.xla
    with pytest.raises(ValueError, match="precision"):
        plan(DeviceFacts(), precision="half")


MIRRORED = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from pneumokit import get_catalog
    from pneumokit.core.config import TrainConfig
    from pneumokit.training.fitting import fit
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    import sys
    sys.path.insert(0, {tests!r})
    from helpers import make_dataset
    import tempfile, pathlib
    from pneumokit.data.dataset import scan
    root = make_dataset(pathlib.Path(tempfile.mkdtemp()), per_class=8, size=32)
    idx = scan(root).index
    arch = get_catalog().architecture("cnn_optimized")
    cfg = TrainConfig(epochs=2, batch_size=8, image_size=32, augment="crop")
    result = fit(arch, cfg, get_catalog(), idx.path.tolist(), idx.label.to_numpy(), strategy=strategy)
    assert len(result.history) == 2 and np.isfinite(result.history["loss"]).all()
    print("replicas", strategy.num_replicas_in_sync, "variables on",
          type(result.model.trainable_variables[0]).__name__)
""")


def test_mirrored_strategy_fit_on_two_logical_cpus():
    import os

    code = MIRRORED.format(tests=os.path.dirname(os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "replicas 2" in out.stdout
