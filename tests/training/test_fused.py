"""The fused OpenCV path draws and applies the same augmentations as the layers, and the pipeline uses it."""

import numpy as np
import pytest
from helpers import make_dataset, xray_like

from pneumokit import get_catalog
from pneumokit.data.dataset import scan
from pneumokit.data.preprocessing import Preprocessing
from pneumokit.training.fused import FusedAugmentation, layer_seeds
from pneumokit.training.pipeline import build_augmentations
from pneumokit.training.pipeline import make_dataset as make_pipeline

SIZE = 48


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return np.stack([xray_like(i % 2, SIZE, rng) for i in range(6)])[..., None]


def layer_by_layer(layers, images, seed, pre):
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    seeds = layer_seeds(seed, len(layers))
    for k, layer in enumerate(layers):
        x = layer(x, training=True, seed=seeds[k])
    return pre.normalize(x).numpy()


def fused(layers, images, seed, pre):
    import tensorflow as tf

    aug = FusedAugmentation(layers, pre)
    maps, params, image_params = aug.draw(tf.constant(len(images)), SIZE, SIZE, seed)
    return aug.apply(images, np.arange(len(images)), maps.numpy(), params.numpy(), image_params.numpy())


@pytest.mark.parametrize("spec, mean_tol, max_tol", [
    ("flip:mode=horizontal_and_vertical", 0, 0),  # exact: whole-pixel moves
    ("brightness:factor=0.3", 0, 1e-6),           # exact: same formula on each gray level
    ("contrast:factor=0.3", 0, 1e-6),
    ("brightness,contrast", 0, 1e-6),
    ("crop:fraction=0.8", 1.0, 3.0),              # one bilinear pass each; OpenCV rounds to uint8
    ("rotate:degrees=10", 1.0, 3.0),
    ("zoom:factor=0.2", 1.0, 3.0),
    ("crop:scale=0.35-1", 1.0, 3.0),
    ("gamma:factor=0.5", 0, 1e-4),
    ("blur:sigma=2", 0, 0),                        # exact: the same OpenCV call on the same uint8 image
    ("sharpen:amount=2", 0, 0),
    ("noise:std=0.1", 0, 0),
    ("jpeg:quality=10-40", 0, 0),
    ("blur,noise,gamma", 0, 1e-4),
])
@pytest.mark.parametrize("channels, preset", [(1, "unit"), (3, "caffe")])
def test_fused_matches_layers(images, spec, mean_tol, max_tol, channels, preset):
    """Same seed, same draw: the two paths agree to within interpolation rounding (in gray levels)."""
    import tensorflow as tf

    pre = Preprocessing.from_preset(preset, SIZE, channels)
    layers = build_augmentations(spec, get_catalog(), seed=0)
    seed = tf.constant([5, 6], tf.int64)
    ref, out = layer_by_layer(layers, images, seed, pre), fused(layers, images, seed, pre)
    assert out.shape == ref.shape == (6, SIZE, SIZE, channels) and out.dtype == np.float32
    levels = np.abs(out - ref) / (pre.scale / np.asarray(pre.std, dtype=np.float32))
    assert levels.mean() <= mean_tol + 1e-4 and levels.max() <= max_tol + 1e-4
    assert not np.allclose(out, pre.normalize(images.astype(np.float32)))  # it did augment


def test_default_chain_resamples_once(images):
    """crop then rotate: one warp through the product of the maps, close to two warps in a row."""
    import tensorflow as tf

    pre = Preprocessing.from_preset("unit", SIZE, 1)
    layers = build_augmentations("crop,rotate,brightness,contrast", get_catalog(), seed=0)
    seed = tf.constant([1, 2], tf.int64)
    ref, out = layer_by_layer(layers, images, seed, pre), fused(layers, images, seed, pre)
    inner = np.abs(out - ref)[:, 4:-4, 4:-4] * 255  # borders differ: the fused path reflects the original
    assert inner.mean() < 2.0


def test_draw_is_the_layers_draw():
    """Seeds are split per layer as in the layer-by-layer path, so a draw depends on position too."""
    import tensorflow as tf

    pre = Preprocessing.from_preset("unit", SIZE, 1)
    seed = tf.constant([3, 4], tf.int64)
    one = FusedAugmentation(build_augmentations("rotate", get_catalog(), seed=0), pre)
    two = FusedAugmentation(build_augmentations("rotate,rotate", get_catalog(), seed=0), pre)
    maps1, *_ = one.draw(tf.constant(4), SIZE, SIZE, seed)
    maps1b, *_ = one.draw(tf.constant(4), SIZE, SIZE, seed)
    maps2, *_ = two.draw(tf.constant(4), SIZE, SIZE, seed)
    np.testing.assert_array_equal(maps1.numpy(), maps1b.numpy())
    assert not np.allclose(maps1.numpy(), maps2.numpy())


def test_pipeline_falls_back_to_layers_for_other_augmentations(tmp_path):
    """A plugin's layer in the list: the whole list runs layer by layer, still seeded and repeatable."""
    index = scan(make_dataset(tmp_path, per_class=6, size=40)).index
    pre = Preprocessing.from_preset("unit", 32, 1)

    def run(spec):
        augs = build_augmentations(spec, get_catalog(), seed=3)
        ds = make_pipeline(index.path, index.label, pre, batch_size=4, training=True,
                           augmentations=augs, seed=3)
        return np.concatenate([x.numpy() for x, _ in ds])

    mixed, again = run("flip,gaussian_noise"), run("flip,gaussian_noise")
    np.testing.assert_array_equal(mixed, again)
    assert mixed.shape == (12, 32, 32, 1) and 0.0 <= mixed.min() and mixed.max() <= 1.0
    assert not np.allclose(np.sort(mixed.ravel()), np.sort(run("flip").ravel()))


def test_flip_and_crop_match_independent_references(images):
    """The matrices themselves, against NumPy's flip and TensorFlow's crop_and_resize."""
    import tensorflow as tf

    pre = Preprocessing.from_preset("unit", SIZE, 1)
    seed = tf.constant([7, 8], tf.int64)
    flip = build_augmentations("flip", get_catalog(), seed=0)
    out = fused(flip, images, seed, pre)[..., 0] * 255
    layer_seed = layer_seeds(seed, 1)[0]
    flipped = (flip[0].per_image(6, tf.random.experimental.stateless_split(layer_seed, 2)[0], 0.0, 1.0)
               < 0.5).numpy()
    assert 0 < flipped.sum() < 6  # this seed flips some images and not others
    expected = np.where(flipped[:, None, None], images[:, :, ::-1, 0], images[..., 0])
    np.testing.assert_allclose(out, expected, atol=1e-3)

    crop = build_augmentations("crop:fraction=0.7", get_catalog(), seed=0)
    out = fused(crop, images, seed, pre)[..., 0] * 255
    offsets = tf.random.stateless_uniform([6, 2], layer_seed, 0.0, 0.3)
    boxes = tf.concat([offsets, offsets + 0.7], axis=1)
    expected = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, tf.range(6), [SIZE, SIZE])
    diff = np.abs(out - expected.numpy()[..., 0])
    assert diff.mean() < 1.0 and diff.max() <= 3.0


def test_composition_order(images):
    """crop then flip is not flip then crop: the fused product must keep the list's order."""
    import tensorflow as tf

    pre = Preprocessing.from_preset("unit", SIZE, 1)
    seed = tf.constant([9, 10], tf.int64)
    layers = build_augmentations("crop:fraction=0.6,flip", get_catalog(), seed=0)
    levels = np.abs(fused(layers, images, seed, pre) - layer_by_layer(layers, images, seed, pre)) * 255
    assert levels.mean() < 1.0 and levels.max() <= 3.0
    swapped = [layers[1], layers[0]]  # same layers, other order: clearly different images
    other = np.abs(fused(swapped, images, seed, pre) - layer_by_layer(layers, images, seed, pre)) * 255
    assert other.mean() > 5.0


def test_what_is_fused():
    from pneumokit_example.layers import ClippedGaussianNoise

    from pneumokit.models.augmentations.layers import RandomBrightness

    class Darker(RandomBrightness):
        def augment(self, images, seed):
            return images * 0.5

    def layers(spec):
        return build_augmentations(spec, get_catalog(), seed=0)

    assert FusedAugmentation.supports(layers("crop,rotate,brightness,contrast"))
    assert FusedAugmentation.supports([])
    assert not FusedAugmentation.supports(layers("brightness,crop"))  # pointwise before geometric
    assert not FusedAugmentation.supports([*layers("flip"), ClippedGaussianNoise(4.0, seed=0)])
    assert not FusedAugmentation.supports([Darker()])  # its own augment would be ignored
    with pytest.raises(TypeError, match="PointwiseAugmentation"):
        FusedAugmentation([ClippedGaussianNoise(4.0)], Preprocessing.from_preset("unit", SIZE, 1))


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    return scan(make_dataset(tmp_path_factory.mktemp("fx"), per_class=6, size=40)).index


def test_pipeline_takes_the_fused_path_and_agrees_with_the_other(small_index, monkeypatch):
    pre = Preprocessing.from_preset("unit", 32, 1)
    calls = []
    real_apply = FusedAugmentation.apply
    monkeypatch.setattr(FusedAugmentation, "apply", lambda self, *a: calls.append(1) or real_apply(self, *a))

    def run(spec):
        augs = build_augmentations(spec, get_catalog(), seed=4)
        ds = make_pipeline(small_index.path, small_index.label, pre, batch_size=5, training=True,
                           augmentations=augs, seed=4)
        return np.concatenate([x.numpy() for x, _ in ds])

    fast = run("crop,brightness,contrast")
    assert len(calls) == 3  # 12 images in batches of 5
    run("brightness,crop")
    assert len(calls) == 3  # not fusable: layer by layer
    monkeypatch.setattr(FusedAugmentation, "supports", staticmethod(lambda layers: False))
    slow = run("crop,brightness,contrast")
    levels = np.abs(fast - slow) * 255
    assert levels.mean() < 1.0 and levels.max() <= 4.0


def test_images_of_the_wrong_shape_are_refused(small_index):
    pre = Preprocessing.from_preset("unit", 32, 1)
    with pytest.raises(ValueError, match=r"expected uint8 \(12, 32, 32, 1\)"):
        make_pipeline(small_index.path, small_index.label, pre, batch_size=4,
                      images=np.zeros((12, 40, 40, 1), np.uint8))


def test_default_augmentation_takes_the_fused_path():
    from pneumokit.core.config import DEFAULT_AUGMENT

    assert FusedAugmentation.supports(build_augmentations(DEFAULT_AUGMENT, get_catalog(), seed=0))
