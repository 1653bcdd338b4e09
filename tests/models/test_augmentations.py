"""Augmentation specifics (the contract every augmentation keeps is checked by pneumokit.testing,
in test_contract.py)."""

import pytest

from pneumokit import get_catalog


def test_crop_fraction_is_validated():
    with pytest.raises(ValueError, match="fraction"):
        get_catalog().augmentation("crop").build(fraction=1.5)


def test_builder_without_seed_parameter_gets_none():
    from pneumokit import Augmentation
    from pneumokit.core.catalog import Catalog
    from pneumokit.training.pipeline import build_augmentations

    seen = {}

    def build(strength=1):
        seen["strength"] = strength
        return object()

    catalog = Catalog(augmentations={"plain": Augmentation(name="plain", build=build)})
    assert len(build_augmentations("plain:strength=3", catalog, seed=5)) == 1
    assert seen == {"strength": 3}
