"""The contract every architecture and augmentation must keep, as checks a plugin's tests run.

In the spirit of scikit-learn's ``check_estimator`` / ``parametrize_with_checks``:
pneumokit's own suite and the example plugin's run exactly these checks, and so can
any third-party plugin (docs/plugins.md)::

    from pneumokit.testing import parametrize_plugin

    @parametrize_plugin("my-pneumokit-plugin")     # the distribution's name
    def test_pneumokit_contract(check):
        check()

Each check is one test, with an id such as ``architecture:tiny_cnn:exports_to_onnx``;
a broken contract raises ``AssertionError`` saying what is wrong. ``check_architecture``
and ``check_augmentation`` run every check on one record.

Architectures: build at a small size to ``(None, 1)``; a float32 probability in
[0, 1], also under a mixed_float16 policy; one training step changes the weights;
saved as ``.keras`` and reloaded, it predicts the same; converted to ONNX, it
predicts the same within the export's tolerance.

Recipes: the settings make a valid ``TrainConfig``; the architecture is installed and
takes the recipe's options; the augmentation spec builds; the model builds at the
recipe's image size.

Augmentations: shape, float32 and the 0..255 range are kept, and the images change
when training; identity at inference; a seed repeats the augmentation (the builder's
``seed``, and a per-call ``seed`` when ``call`` takes one); float32 under
mixed_float16; the layer saves and reloads inside a model; built-in kinds that the
fused OpenCV path takes agree with the layer path.
"""

from __future__ import annotations

import functools
import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 32  # architectures are checked at this input size
AUG_SIZE = 48


def small_options(arch) -> dict:
    """Options that build without downloads: ``weights="none"`` where the builder takes weights."""
    return {"weights": "none"} if "weights" in arch.options else {}


# --- architectures ---------------------------------------------------------------------------

def architecture_checks(arch, size: int = SIZE) -> list[tuple[str, Callable[[], None]]]:
    """``(name, check)`` pairs for one ``Architecture`` record."""
    return [(name, functools.partial(fn, arch, size)) for name, fn in (
        ("builds", _builds), ("float32_probability", _float32_probability),
        ("float32_under_mixed_precision", _arch_mixed_precision), ("trains", _trains),
        ("saves_and_reloads", _saves_and_reloads), ("exports_to_onnx", _exports_to_onnx))]


def check_architecture(arch, size: int = SIZE) -> None:
    """Run every architecture check on ``arch``; ``AssertionError`` at the first failure."""
    for _name, check in architecture_checks(arch, size):
        check()


def _build(arch, size):
    return arch.build((size, size, arch.channels), **small_options(arch))


def _inputs(arch, size, n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, size, size, arch.channels)).astype("float32")


def _builds(arch, size):
    model = _build(arch, size)
    assert model.input_shape == (None, size, size, arch.channels), (
        f"{arch.name}: input shape {model.input_shape}, expected (None, {size}, {size}, {arch.channels})")
    assert model.output_shape == (None, 1), (
        f"{arch.name}: output shape {model.output_shape}, expected (None, 1)")


def _float32_probability(arch, size):
    model = _build(arch, size)
    p = np.asarray(model(_inputs(arch, size), training=False))
    assert model.output.dtype == "float32", (
        f"{arch.name}: output dtype {model.output.dtype}, expected float32")
    assert p.shape == (4, 1) and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)), (
        f"{arch.name}: outputs {p.ravel()[:4]} are not probabilities in [0, 1] (end in one sigmoid unit)")


def _arch_mixed_precision(arch, size):
    with _mixed_precision():
        model = _build(arch, size)
        out = model(_inputs(arch, size), training=False)
        assert model.output.dtype == "float32" and out.dtype == "float32", (
            f"{arch.name}: output is {out.dtype} under mixed_float16; give the last layer dtype='float32'")
        p = np.asarray(out)
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)), (
            f"{arch.name}: outputs {p.ravel()[:4]} under mixed_float16 are not probabilities in [0, 1]")


class _mixed_precision:
    """A mixed_float16 global policy for the block; the previous one afterwards."""

    def __enter__(self):
        import keras

        self.previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")

    def __exit__(self, *exc):
        import keras

        keras.mixed_precision.set_global_policy(self.previous)


def _trains(arch, size):
    import keras

    model = _build(arch, size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    weights = lambda: [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]  # noqa: E731
    before = weights()
    loss = model.train_on_batch(_inputs(arch, size), np.array([0, 1, 0, 1], dtype="float32"))
    assert np.isfinite(loss), f"{arch.name}: the training loss is {loss}"
    changed = any(not np.array_equal(a, b) for a, b in zip(before, weights(), strict=True))
    assert changed, f"{arch.name}: one training step changed no weight"


def _saves_and_reloads(arch, size):
    import keras

    model = _build(arch, size)
    x = _inputs(arch, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        try:
            restored = keras.saving.load_model(path, compile=False)
        except Exception as exc:
            raise AssertionError(f"{arch.name}: the saved model does not load ({exc}); register custom "
                                 "layers with keras.saving.register_keras_serializable") from exc
    before, after = (np.asarray(m(x, training=False)) for m in (model, restored))
    diff = float(np.max(np.abs(before - after)))
    assert diff <= 1e-6, f"{arch.name}: the reloaded model predicts differently (max |diff| {diff:.3g})"


def _exports_to_onnx(arch, size):
    import onnxruntime as ort

    from .inference.export import INPUT_NAME, PARITY_TOLERANCE, to_onnx

    model = _build(arch, size)
    x = _inputs(arch, size)
    try:
        proto = to_onnx(model, size, size, arch.channels)
    except Exception as exc:
        raise AssertionError(f"{arch.name}: tf2onnx cannot convert it ({exc})") from exc
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x})[0]
    diff = float(np.max(np.abs(np.asarray(model(x, training=False)) - got)))
    assert diff <= PARITY_TOLERANCE, (
        f"{arch.name}: ONNX differs from Keras by {diff:.3g} > {PARITY_TOLERANCE}")


# --- augmentations ---------------------------------------------------------------------------

def augmentation_checks(aug) -> list[tuple[str, Callable[[], None]]]:
    """``(name, check)`` pairs for one ``Augmentation`` record (the seed checks only where a
    seed can be given; the fused check only for layers the fused path takes)."""
    try:
        layer = _layer(aug)
    except Exception as exc:  # a failing builder is one failing check, not a broken test module
        def builds(exc=exc):
            raise AssertionError(f"{aug.name}: its builder fails ({type(exc).__name__}: {exc})") from exc
        return [("builds", builds)]
    checks = [("keeps_shape_dtype_and_range", _keeps_contract), ("identity_at_inference", _identity),
              ("float32_under_mixed_precision", _aug_mixed_precision), ("saves_and_reloads", _aug_saves),
              ("pipeline_draws_anew_and_repeats_with_a_seed", _pipeline_repeats)]
    if _takes_seed(aug):
        checks.append(("seed_repeats", _seed_repeats))
    if "seed" in inspect.signature(layer.call).parameters:
        checks.append(("per_call_seed_is_stateless", _per_call_seed))
    if _fusable(layer):
        checks.append(("fused_matches_layer", _fused_matches))
    return [(name, functools.partial(fn, aug)) for name, fn in checks]


def check_augmentation(aug) -> None:
    """Run every augmentation check on ``aug``; ``AssertionError`` at the first failure."""
    for _name, check in augmentation_checks(aug):
        check()


def _takes_seed(aug) -> bool:
    return "seed" in inspect.signature(aug.build).parameters


def _layer(aug, seed: int = 1):
    return aug.build(**aug.params, seed=seed) if _takes_seed(aug) else aug.build(**aug.params)


def _images():
    import tensorflow as tf

    batch = np.random.default_rng(0).uniform(0, 255, (4, AUG_SIZE, AUG_SIZE, 1)).astype("float32")
    batch[:, :4], batch[:, -4:] = 0.0, 255.0  # both ends of the range, where clipping must act
    return tf.constant(batch)


def _keeps_contract(aug):
    images = _images()
    out = np.asarray(_layer(aug)(images, training=True))
    assert out.shape == tuple(images.shape), f"{aug.name}: shape {out.shape}, expected {tuple(images.shape)}"
    assert out.dtype == np.float32, f"{aug.name}: dtype {out.dtype}, expected float32"
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3, (
        f"{aug.name}: values {out.min():.4g}..{out.max():.4g} leave the pixel range 0..255; clip them")
    assert not np.allclose(out, images.numpy()), f"{aug.name}: changed nothing while training"


def _identity(aug):
    images = _images()
    out = np.asarray(_layer(aug)(images, training=False))
    assert np.array_equal(out, images.numpy()), f"{aug.name}: changes images at inference (training=False)"


def _aug_mixed_precision(aug):
    import keras

    with _mixed_precision():
        layer = _layer(aug)
        for training in (True, False):
            dtype = keras.backend.standardize_dtype(layer(_images(), training=training).dtype)
            assert dtype == "float32", f"{aug.name}: gives {dtype} under mixed_float16 (training={training})"


def _seed_repeats(aug):
    images = _images()
    first, again = (np.asarray(_layer(aug, seed=7)(images, training=True)) for _ in range(2))
    assert np.array_equal(first, again), f"{aug.name}: two layers built with seed=7 augment differently"


def _per_call_seed(aug):
    import tensorflow as tf

    images, layer = _images(), _layer(aug)
    seed = tf.constant([3, 4], tf.int64)
    first = np.asarray(layer(images, training=True, seed=seed))
    assert np.array_equal(first, np.asarray(layer(images, training=True, seed=seed))), (
        f"{aug.name}: the same per-call seed gave different images (state advanced)")
    other = np.asarray(layer(images, training=True, seed=seed + tf.constant([0, 1], tf.int64)))
    assert not np.array_equal(first, other), f"{aug.name}: different per-call seeds gave the same images"


def _aug_saves(aug):
    import keras

    images = _images()
    inputs = keras.Input((AUG_SIZE, AUG_SIZE, 1))
    layer = _layer(aug)
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "aug.keras")
        try:
            restored = keras.saving.load_model(Path(tmp) / "aug.keras")
        except Exception as exc:
            raise AssertionError(f"{aug.name}: a model holding the layer does not reload ({exc}); register "
                                 "it with keras.saving.register_keras_serializable") from exc
    assert np.array_equal(restored.predict(images, verbose=0), images.numpy()), (
        f"{aug.name}: the reloaded layer is not identity at inference")
    again = restored.layers[-1]
    config, config_again = layer.get_config(), again.get_config()
    lost = sorted(k for k in config if k != "name" and config_again.get(k) != config[k])
    assert not lost, f"{aug.name}: get_config does not bring back {', '.join(lost)} after a reload"
    if "seed" in inspect.signature(layer.call).parameters:  # the same draw: the same settings
        import tensorflow as tf

        seed = tf.constant([3, 4], tf.int64)
        a, b = (np.asarray(x(images, training=True, seed=seed)) for x in (layer, again))
        assert np.array_equal(a, b), (f"{aug.name}: the reloaded layer augments differently with the same "
                                      "seed: get_config misses a setting")


def _pipeline_repeats(aug):
    """In pneumokit's input pipeline (fused or layer by layer), each epoch augments every image
    anew, and a run's seed repeats its epochs exactly."""
    from .data.preprocessing import Preprocessing
    from .training.pipeline import make_dataset

    cached = _smooth_images(8)
    pre = Preprocessing.from_preset("raw", AUG_SIZE, 1)

    def epochs(seed):
        layers = [_layer(aug, seed=seed)]
        ds = make_dataset([f"x{i}.png" for i in range(8)], list(range(8)), pre, batch_size=4,
                          training=True, augmentations=layers, seed=seed, images=cached)
        out = []
        for _epoch in range(2):  # each epoch's images in index order: the shuffle undone
            batches = [(np.asarray(x), np.asarray(y)) for x, y in ds]
            x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
            out.append(x[np.argsort(y)])
        return out

    first, again = epochs(1), epochs(1)
    same = [i for i in range(8) if np.array_equal(first[0][i], first[1][i])]
    assert len(same) < 8, (
        f"{aug.name}: the second epoch gave every image exactly as the first: no random draw")
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b), f"{aug.name}: the same seed gave different epochs in the input pipeline"


def _smooth_images(n: int = 6) -> np.ndarray:
    """uint8 (n, H, W, 1) images as smooth as X-rays (resampling noise would dominate otherwise)."""
    yy, xx = np.mgrid[0:AUG_SIZE, 0:AUG_SIZE] / AUG_SIZE
    rng = np.random.default_rng(0)
    out = [120 + 60 * np.cos(3 * xx + rng.uniform(0, 3)) * np.cos(2 * yy) + rng.normal(0, 4, xx.shape)
           for _ in range(n)]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)[..., None]


def _fusable(layer) -> bool:
    from .training.fused import FusedAugmentation

    return FusedAugmentation.supports([layer])


def _fused_matches(aug):
    """Same seed, same draw: within interpolation rounding (mean 1, max 3 gray levels)."""
    import tensorflow as tf

    from .data.preprocessing import Preprocessing
    from .training.fused import FusedAugmentation, layer_seeds

    pre = Preprocessing.from_preset("raw", AUG_SIZE, 1)
    layer, images = _layer(aug, seed=0), _smooth_images()
    seed = tf.constant([5, 6], tf.int64)
    ref = np.asarray(layer(tf.cast(images, tf.float32), training=True, seed=layer_seeds(seed, 1)[0]))
    fused = FusedAugmentation([layer], pre)
    maps, params, image_params = fused.draw(tf.constant(len(images)), AUG_SIZE, AUG_SIZE, seed)
    out = fused.apply(images, np.arange(len(images)), maps.numpy(), params.numpy(), image_params.numpy())
    levels = np.abs(out - ref)
    assert levels.mean() <= 1.0 + 1e-4 and levels.max() <= 3.0 + 1e-4, (
        f"{aug.name}: the fused path differs from the layer by {levels.mean():.3g} gray levels on "
        f"average, {levels.max():.3g} at most")


# --- recipes ---------------------------------------------------------------------------------

def recipe_checks(recipe, catalog=None) -> list[tuple[str, Callable[[], None]]]:
    """``(name, check)`` pairs for one ``Recipe`` record, against ``catalog`` (the loaded one by
    default): its settings make a valid ``TrainConfig``, its architecture is installed and takes
    its options, its augmentation spec builds, and the model builds at its image size."""
    return [(name, functools.partial(fn, recipe, catalog)) for name, fn in (
        ("settings_are_valid", _recipe_config), ("builds", _recipe_builds))]


def check_recipe(recipe, catalog=None) -> None:
    """Run every recipe check on ``recipe``; ``AssertionError`` at the first failure."""
    for _name, check in recipe_checks(recipe, catalog):
        check()


def _recipe_config(recipe, catalog):
    from .core.config import TrainConfig
    from .errors import PneumokitError

    try:
        return TrainConfig(**{**recipe.settings, "recipe": recipe.name})
    except PneumokitError as exc:
        raise AssertionError(f"recipe {recipe.name}: its settings are not a valid TrainConfig: "
                             f"{exc}") from None


def _recipe_builds(recipe, catalog):
    from .core.plugins import get_catalog
    from .errors import PneumokitError
    from .training.pipeline import build_augmentations

    config, catalog = _recipe_config(recipe, catalog), catalog or get_catalog()
    try:
        arch = catalog.architecture(config.architecture)
        arch.check_options(config.options)
        build_augmentations(config.augment, catalog, seed=0)
    except PneumokitError as exc:
        raise AssertionError(f"recipe {recipe.name}: {exc}") from None
    size = config.image_size or arch.image_size
    model = arch.build((size, size, arch.channels), **{**config.options, **small_options(arch)})
    assert model.output_shape == (None, 1), (
        f"recipe {recipe.name}: {arch.name} at {size} px gives {model.output_shape}, expected (None, 1)")


# --- pytest -------------------------------------------------------------------------------------

def plugin_checks(dist_name: str) -> list[tuple[str, Callable[[], None]]]:
    """``(id, check)`` for every record the distribution ``dist_name`` registers; a plugin that
    fails to load, or registers nothing, gives one check that fails saying so."""
    from .core.plugins import _normalize, get_catalog, load_plugins

    if _normalize(dist_name) not in _installed():
        return [_failing(f"{dist_name}:loads", f"plugin {dist_name}: no installed distribution has that "
                         "name; pip install it (e.g. pip install -e .)")]
    loaded = load_plugins(load=[dist_name])
    info = next((p for p in loaded.plugins if _normalize(p.name) == _normalize(dist_name)), None)
    if info is None or info.error:
        why = info.error if info else "it has no entry point in the 'pneumokit' group"
        return [_failing(f"{dist_name}:loads", f"plugin {dist_name}: {why}")]
    if not info.architectures and not info.augmentations and not info.recipes:
        return [_failing(f"{dist_name}:registers", f"plugin {dist_name} loads but registers nothing: are "
                         "its hooks decorated with @pneumokit.hookimpl and named register_architectures / "
                         "register_augmentations / register_recipes?")]
    out = []
    for name in info.architectures:
        arch = loaded.catalog.architecture(name)
        out += [(f"architecture:{name}:{check}", fn) for check, fn in architecture_checks(arch)]
    for name in info.augmentations:
        aug = loaded.catalog.augmentation(name)
        out += [(f"augmentation:{name}:{check}", fn) for check, fn in augmentation_checks(aug)]
    full = get_catalog()  # a recipe may use another plugin's architecture: checked with everything loaded
    for name in info.recipes:
        recipe = loaded.catalog.recipe(name)
        out += [(f"recipe:{name}:{check}", fn) for check, fn in recipe_checks(recipe, full)]
    return out


def _installed() -> set[str]:
    from importlib import metadata

    from .core.plugins import _normalize

    return {_normalize(d.metadata["Name"] or "") for d in metadata.distributions()}


def _failing(name: str, message: str):
    def check():
        raise AssertionError(message)
    return name, check


def parametrize_plugin(dist_name: str):
    """A ``pytest.mark.parametrize`` over every check of every record of ``dist_name``: the
    decorated test takes one argument, ``check``, and calls it."""
    import pytest

    checks = plugin_checks(dist_name)
    return pytest.mark.parametrize("check", [fn for _, fn in checks], ids=[i for i, _ in checks])
