"""Device setup: GPU discovery, memory growth, precision, XLA and distribution strategy.

``plan`` is a pure function of the facts it is given, so every decision can be
tested without a GPU; ``discover`` reads the facts from TensorFlow and the
environment; ``apply`` carries a plan out.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from ..core.config import PRECISIONS, XLA_MODES
from ..errors import ConfigError, DeviceError

MIXED_MIN_COMPUTE_CAPABILITY = (7, 0)  # tensor cores: Volta and newer


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers: one dict per GPU (name, compute_capability), TF_CONFIG."""

    gpus: tuple = ()
    tf_config: dict | None = None


@dataclass
class DevicePlan:
    gpus: int
    memory_growth: bool
    precision: str  # "float32" or "mixed_float16"
    xla: bool
    strategy: str  # "default" or "mirrored"
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"device: {self.gpus} GPU(s), precision {self.precision}, XLA {'on' if self.xla else 'off'}, "
                f"strategy {self.strategy} — " + "; ".join(self.reasons))


def discover() -> DeviceFacts:
    """The visible GPUs (with compute capability) and ``TF_CONFIG``."""
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"name": details.get("device_name", gpu.name),
                     "compute_capability": tuple(details.get("compute_capability") or (0, 0))})
    raw = os.environ.get("TF_CONFIG")
    try:
        tf_config = json.loads(raw) if raw else None
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}): fix it or unset it") from None
    return DeviceFacts(gpus=tuple(gpus), tf_config=tf_config)


def plan(facts: DeviceFacts, precision: str = "auto", xla: str = "auto") -> DevicePlan:
    """Decide memory growth, precision, XLA and strategy from ``facts``.

    - precision auto: ``mixed_float16`` only if every GPU has compute
      capability >= 7.0 (tensor cores); float32 otherwise and on CPU.
    - XLA auto: on with a GPU; off on CPU, where it is about 10x slower.
    - strategy: ``mirrored`` (MirroredStrategy) with several GPUs; else the
      default single-device strategy. A TF_CONFIG naming several workers is
      refused (``DeviceError``): Keras 3 cannot train under
      MultiWorkerMirroredStrategy (see ``MULTI_WORKER_UNSUPPORTED``).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if xla not in XLA_MODES:
        raise ConfigError(f"xla must be one of {XLA_MODES}, got {xla!r}")
    reasons = []
    n = len(facts.gpus)
    if n:
        reasons.append(f"memory growth on {n} GPU(s), so TensorFlow takes memory as needed")
    ccs = [tuple(g.get("compute_capability") or (0, 0)) for g in facts.gpus]
    if precision == "auto":
        if n and all(cc >= MIXED_MIN_COMPUTE_CAPABILITY for cc in ccs):
            chosen = "mixed_float16"
            reasons.append(f"mixed_float16: every GPU has compute capability >= 7.0 ({ccs})")
        else:
            chosen = "float32"
            reasons.append("float32: no GPU" if not n else
                           f"float32: a GPU below compute capability 7.0 ({ccs}) gains nothing from float16")
    else:
        chosen = "mixed_float16" if precision == "mixed" else "float32"
        reasons.append(f"{chosen}: asked for")
    if xla == "auto":
        use_xla = bool(n)
        reasons.append("XLA on: GPU present" if n else "XLA off: on CPU it is about 10x slower")
    else:
        use_xla = xla == "on"
        reasons.append(f"XLA {xla}: asked for")
    spec = facts.tf_config
    cluster = (spec.get("cluster") if isinstance(spec, dict) else None) or {}
    if spec is not None and not (isinstance(spec, dict) and isinstance(cluster, dict)
                                 and all(isinstance(v, list) for v in cluster.values())):
        raise ConfigError(f"TF_CONFIG {facts.tf_config!r} is not a TensorFlow cluster spec "
                          '({"cluster": {"worker": [...]}, "task": {...}}): fix it or unset it')
    workers = sum(len(v) for k, v in cluster.items() if k in ("worker", "chief"))
    if facts.tf_config and workers > 1:
        raise DeviceError(MULTI_WORKER_UNSUPPORTED.format(workers=workers))
    if n > 1:
        strategy = "mirrored"
        reasons.append(f"MirroredStrategy over {n} GPUs")
    else:
        strategy = "default"
        reasons.append("single device")
    return DevicePlan(gpus=n, memory_growth=bool(n), precision=chosen, xla=use_xla,
                      strategy=strategy, reasons=reasons)


# Keras 3's model.fit does not run under tf.distribute.MultiWorkerMirroredStrategy: the
# first step fails converting a PerReplica batch to a tensor (keras-team/keras#20585, open;
# reproduced with Keras 3.15 and TensorFlow 2.21 by tests/training/test_multi_worker.py).
MULTI_WORKER_UNSUPPORTED = (
    "TF_CONFIG names {workers} workers, but multi-worker training cannot run: Keras 3's model.fit "
    "fails under MultiWorkerMirroredStrategy (keras-team/keras#20585). Run the folds as separate "
    "jobs instead (pneumokit cv --plan, then --only-fold K per job: docs/cluster.md), or unset TF_CONFIG")


def apply(device_plan: DevicePlan):
    """Carry out a plan: memory growth, global precision policy; return the strategy."""
    import keras
    import tensorflow as tf

    if device_plan.memory_growth:
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: growth can no longer change
                pass
    keras.mixed_precision.set_global_policy(device_plan.precision)
    if device_plan.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def setup(precision: str = "auto", xla: str = "auto", facts: DeviceFacts | None = None):
    """Discover, plan and apply; return ``(plan, strategy)``."""
    device_plan = plan(facts or discover(), precision, xla)
    return device_plan, apply(device_plan)
