"""The albumentations pipeline behind `Augment`: boxes stay on the threat, draws follow the seed."""

from __future__ import annotations

import pickle

import albumentations as A
import numpy as np
import pytest

from training.augment import Augment, DropLowEnergy, TargetedCrop
from training.data import Sample

DENSE, MARK = 0.5, 0.3  # attenuation of the threat, and of its right-hand quarter


def _scan(has_low: bool = True) -> Sample:
    """A 300x1200 scan holding one threat: a dense block whose right quarter is lighter,
    so a flip shows in the pixels; a second, small block near the far edge."""
    image = np.zeros((2, 300, 1200), np.float32)
    image[:, 100:180, 400:520] = DENSE
    image[:, 100:180, 490:520] = MARK
    image[:, 40:60, 1100:1130] = DENSE
    boxes = np.array([[400, 100, 520, 180], [1100, 40, 1130, 60]], np.float32)
    return Sample(image, boxes, np.array([1, 3]), has_low, "toy", places=("tyre", ""))


def _geometry_only(**kw: object) -> Augment:
    return Augment(row_gain_sigma=0, noise_p=0, drop_low_p=0, **kw)  # type: ignore[arg-type]


def test_flips_scales_and_crops_keep_each_box_on_its_block():
    aug = _geometry_only(crop_hw=(160, 192), scale_range=(0.7, 1.3), object_crop_p=0.8)
    flips = set()
    for seed in range(60):
        out = aug(_scan(), np.random.default_rng(seed))
        assert out.image.shape == (2, 160, 192) and out.image.dtype == np.float32
        dense = out.image[0] > 0.2
        inside = np.zeros_like(dense)
        for (x0, y0, x1, y1), label in zip(out.boxes, out.labels, strict=True):
            # The block fills its box: all but the resampled edge pixels are dense.
            ix0, iy0, ix1, iy1 = int(np.ceil(x0)), int(np.ceil(y0)), int(x1), int(y1)
            inside[max(iy0 - 2, 0) : iy1 + 2, max(ix0 - 2, 0) : ix1 + 2] = True
            core = out.image[0, iy0 + 2 : iy1 - 2, ix0 + 2 : ix1 - 2]
            assert core.size and core.min() > MARK - 0.02
            if label == 1 and x1 - x0 > 40 and x0 > 2 and x1 < 190:  # the whole big block
                # Which end the lighter quarter is at says whether the crop was flipped.
                left = out.image[0, iy0 + 4 : iy1 - 4, ix0 + 3 : ix0 + 6].mean()
                right = out.image[0, iy0 + 4 : iy1 - 4, ix1 - 6 : ix1 - 3].mean()
                flips.add(bool(left < right))
        # The blocks lie too far apart to share a crop. With a box kept, every dense
        # pixel is in it; with none, what shows of a block is under min_visible of it.
        if len(out.boxes):
            assert not (dense & ~inside).any()
        else:
            assert dense.sum() < 0.4 * 120 * 80 * 1.3**2
    assert flips == {False, True}


def test_boxes_cut_below_the_minimum_visibility_are_dropped_with_their_labels():
    # Crops anywhere (no targeting) over a 1200 px scan: most miss both blocks, some
    # cut one; a box is kept exactly when at least 40 % of it is in the crop.
    aug = _geometry_only(crop_hw=(100, 100), scale_range=(1.0, 1.0), object_crop_p=0.0)
    kept = 0
    for seed in range(200):
        out = aug(_scan(), np.random.default_rng(seed))
        assert len(out.boxes) == len(out.labels) == len(out.places)
        for box, label, place in zip(out.boxes, out.labels, out.places, strict=True):
            assert 0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 100
            assert (label, place) in {(1, "tyre"), (3, "")}
            kept += 1
    assert kept > 0


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    aug = Augment(crop_hw=(128, 128), noise_p=0.5, drop_low_p=0.5, jpeg_p=0.5)

    def draw(seed: int, a: Augment = aug) -> list[Sample]:
        rng = np.random.default_rng(seed)
        return [a(_scan(), rng) for _ in range(8)]

    first, again = draw(7), draw(7)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.labels.tolist() == b.labels.tolist() and a.places == b.places
        assert a.has_low == b.has_low
    # A pickled copy (DataLoader workers under spawn) draws the same too.
    copy = pickle.loads(pickle.dumps(aug))
    for a, b in zip(first, draw(7, copy), strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    other = draw(8)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    # Albumentations' own state plays no part: reseeding it changes nothing.
    for pipeline in aug.pipelines.values():
        pipeline.set_random_seed(12345)
    for a, b in zip(first, draw(7), strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_the_pipeline_is_albumentations_with_no_colour_transforms():
    aug = Augment(min_visible=0.3)
    dual, single = aug.pipelines[True], aug.pipelines[False]
    assert isinstance(dual, A.Compose) and isinstance(dual.transforms[0], TargetedCrop)
    assert isinstance(dual.transforms[1], A.HorizontalFlip)
    params = dual.processors["bboxes"].params
    assert params.format == "pascal_voc" and params.min_visibility == 0.3
    names = {type(t).__name__ for p in (dual, single) for t in _flat(p)}
    assert names.isdisjoint({"RandomBrightnessContrast", "ColorJitter", "GaussianBlur", "Blur"})
    # Only a dual-energy scan can lose its low channel.
    assert DropLowEnergy.__name__ in names
    assert all(not isinstance(t, DropLowEnergy) for t in _flat(single))


def _flat(compose: A.BaseCompose) -> list[object]:
    out: list[object] = []
    for t in compose.transforms:
        out += _flat(t) if isinstance(t, A.BaseCompose) else [t]
    return out


@pytest.mark.parametrize("has_low", [True, False])
def test_single_energy_samples_stay_single_and_dropped_ones_say_so(has_low: bool):
    aug = Augment(crop_hw=(96, 96), noise_p=0, drop_low_p=1.0, jpeg_p=0.0)
    out = aug(_scan(has_low), np.random.default_rng(0))
    assert not out.has_low
    np.testing.assert_array_equal(out.image[1], out.image[0])


def test_photon_noise_keeps_a_single_energy_scan_single_and_a_dual_one_independent():
    """A single-energy scan's low channel is its high one at inference: noise must keep it so."""
    aug = Augment(crop_hw=(96, 96), row_gain_sigma=0, noise_p=1.0, drop_low_p=0, jpeg_p=0.0)
    single = aug(_scan(has_low=False), np.random.default_rng(1))
    assert len(np.unique(single.image[0])) > 100  # noisy, not the flat toy scan
    np.testing.assert_array_equal(single.image[1], single.image[0])
    dual = _scan(has_low=True)
    dual.image[1] *= 0.8  # a real low channel differs from the high one
    out = aug(dual, np.random.default_rng(1))
    # without noise the low channel would be 0.8 times the high one, pixel for pixel
    assert np.abs(out.image[1] - 0.8 * out.image[0]).max() > 1e-3
