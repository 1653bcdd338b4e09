"""The stress bench's synthetic acquisition shifts do what their names say."""

import numpy as np
import pytest
from helpers import xray_like
from PIL import Image

from pneumokit.data.preprocessing import decode
from pneumokit.data.stress import SHIFTS, shifted_file


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    path = tmp_path_factory.mktemp("stress") / "IM-0001-0001.png"
    Image.fromarray(xray_like(1, 96, np.random.default_rng(0))).save(path)
    return path


def pixels(xray, shift, size=None):
    return decode(shifted_file(xray, shift), size).astype(np.float64)


def test_every_shift_gives_a_decodable_image_and_none_is_the_identity(xray):
    base = np.asarray(Image.open(xray), dtype=np.float64)
    np.testing.assert_array_equal(pixels(xray, "none"), base)
    for name in SHIFTS:
        out = pixels(xray, name, 64)
        assert out.shape == (64, 64) and 0 <= out.min() and out.max() <= 255, name
        if name != "none":
            assert not np.array_equal(out, pixels(xray, "none", 64)), f"{name} changed nothing"


def test_shifts_move_the_image_the_named_way(xray):
    base = pixels(xray, "none")
    assert pixels(xray, "darker").mean() < base.mean() - 10
    assert pixels(xray, "brighter").mean() > base.mean() + 10
    assert pixels(xray, "low_contrast").std() < 0.8 * base.std()
    assert pixels(xray, "high_contrast").std() > 1.2 * base.std()
    borders = pixels(xray, "side_borders_12pct")
    assert borders.shape[1] > base.shape[1] and borders[:, :5].max() == 0 and borders[:, -5:].max() == 0
    assert pixels(xray, "narrower_80pct").shape[1] < base.shape[1]
    rough = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert rough(pixels(xray, "blur_1.5px")) < rough(base)
    noisy = pixels(xray, "noise_10") - base
    assert 5 < noisy.std() < 15
    assert shifted_file(xray, "jpeg_q15")[:2] == b"\xff\xd8"  # re-encoded as a JPEG
    marked = pixels(xray, "marker") - base
    assert marked[:20, -20:].max() > 50 and not marked[20:, :].any()  # only the top right corner
