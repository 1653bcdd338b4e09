"""The tf.data pipeline: shapes, order, determinism, cache, augmentation only in training."""

import numpy as np
import pytest
from helpers import make_dataset

from pneumokit import get_catalog
from pneumokit.data.dataset import scan
from pneumokit.data.preprocessing import ImageDecodeError, Preprocessing
from pneumokit.training.pipeline import build_augmentations, load_images, parse_augmentations
from pneumokit.training.pipeline import make_dataset as make_pipeline


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("px"), per_class=10, size=40)
    return scan(root).index


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_eval_pipeline_keeps_order_and_applies_preprocessing(index):
    pre = Preprocessing.from_preset("tf", 32, 3)
    out = batches(make_pipeline(index.path, index.label, pre, batch_size=8))
    x = np.concatenate([b[0] for b in out])
    y = np.concatenate([b[1] for b in out])
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, index.label.to_numpy(dtype=np.float32))
    expected = pre.prepare(index.path)
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_training_pipeline_is_deterministic_with_seed(index):
    pre = Preprocessing.from_preset("unit", 32, 1)
    cat = get_catalog()

    def run(seed):
        augs = build_augmentations("flip,crop,brightness", cat, seed=seed)
        ds = make_pipeline(index.path, index.label, pre, batch_size=8, training=True,
                           augmentations=augs, seed=seed)
        return batches(ds) + batches(ds)  # two epochs

    first, second, other = run(7), run(7), run(8)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    epoch1 = np.concatenate([b[1] for b in first[:3]])
    assert sorted(epoch1) == sorted(index.label.astype(np.float32))  # every image once


def test_augmentation_only_in_training(index):
    pre = Preprocessing.from_preset("unit", 32, 1)
    augs = build_augmentations("brightness:factor=0.5", get_catalog(), seed=1)
    plain = np.concatenate([b[0] for b in batches(
        make_pipeline(index.path, index.label, pre, batch_size=20, augmentations=augs))])
    np.testing.assert_allclose(plain, pre.prepare(index.path), atol=1e-6)
    trained = batches(make_pipeline(index.path, index.label, pre, batch_size=20, training=True,
                                    augmentations=augs, seed=1))[0][0]
    assert not np.allclose(np.sort(trained.ravel()), np.sort(plain.ravel()))


def test_file_cache_is_written_once_and_reused(index, tmp_path):
    pre = Preprocessing.from_preset("unit", 32, 1)
    first = load_images(index.path, pre, cache=str(tmp_path))
    files = list(tmp_path.glob("pneumokit-*.npy"))
    assert len(files) == 1 and first.dtype == np.uint8
    mtime = files[0].stat().st_mtime_ns
    again = load_images(index.path, pre, cache=str(tmp_path))
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(again), load_images(index.path, pre))
    other_size = load_images(index.path, Preprocessing.from_preset("unit", 24, 1), cache=str(tmp_path))
    assert other_size.shape[1] == 24 and len(list(tmp_path.glob("pneumokit-*.npy"))) == 2


def test_undecodable_file_names_the_file(tmp_path):
    bad = tmp_path / "IM-0001-0001.jpeg"
    bad.write_text("nope")
    with pytest.raises(ImageDecodeError, match="IM-0001-0001.jpeg"):
        load_images([str(bad)], Preprocessing.from_preset("unit", 16, 1))


def test_parse_and_build_augmentations():
    assert parse_augmentations("flip, rotate:degrees=10,crop:fraction=0.8") == [
        ("flip", {}), ("rotate", {"degrees": 10}), ("crop", {"fraction": 0.8})]
    assert parse_augmentations("") == []
    assert parse_augmentations("crop:scale=0.35-1,ratio=0.75-1.33,jpeg") == [
        ("crop", {"scale": "0.35-1", "ratio": "0.75-1.33"}), ("jpeg", {})]
    with pytest.raises(ValueError, match="before any augmentation name"):
        parse_augmentations("ratio=1-2,crop")
    with pytest.raises(ValueError, match="key=value"):
        parse_augmentations("rotate:10")
    from pneumokit.core.catalog import CatalogError

    with pytest.raises(CatalogError, match="unknown augmentation 'flp'.*'flip'"):
        build_augmentations("flp", get_catalog())
    with pytest.raises(ValueError, match="augmentation 'rotate'.*degrees"):
        build_augmentations("rotate:angle=3", get_catalog())
