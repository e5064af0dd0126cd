"""Training data: COCO and YOLO sources via the real decoder and pre-processing; augmentation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.preprocess import ATTENUATION_SCALE, attenuation
from inference.scan import load_scan
from training.augment import (
    SINGLE_ENERGY_16BIT_SHARE,
    Augment,
    eight_bit_export,
    single_energy_draws,
)
from training.data import CocoScans, MixedScans, Sample, YoloScans, summarize
from training.synth.dataset import write_dataset
from training.synth.threats import CATEGORIES


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, count=3, seed=21, workers=1, progress=False)
    return out


@pytest.fixture
def yolo_dir(tmp_path: Path) -> Path:
    """A small real YOLO folder: 8-bit greyscale PNGs written by PIL, one with a low channel."""
    root = tmp_path / "yolo"
    for sub in ("images", "labels", "low"):
        (root / sub).mkdir(parents=True)
    (root / "classes.txt").write_text("narcotics\nfirearm\n")
    img = np.full((100, 300), 250, np.uint8)
    img[40:60, 90:150] = 60  # a dense block where the label is
    Image.fromarray(img).save(root / "images" / "a.png")
    Image.fromarray((img * 0.9).astype(np.uint8)).save(root / "low" / "a.png")
    (root / "labels" / "a.txt").write_text("0 0.4 0.5 0.2 0.2\n")
    Image.fromarray(np.full((100, 300), 250, np.uint8)).save(root / "images" / "b.png")
    return root


def test_coco_source_gives_the_preprocessed_scan_and_its_boxes(synth_dir: Path):
    data = CocoScans(synth_dir)
    assert data.categories == list(CATEGORIES) and len(data) == 3
    s = data[0]
    scan = load_scan(synth_dir / "images/000000_high.png", synth_dir / "images/000000_low.png")
    assert s.image.shape == (2, *scan.shape) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image[0], attenuation(scan.high) / ATTENUATION_SCALE, atol=1e-6)
    assert s.has_low
    ann_count = len(data.items[0][3])
    assert s.boxes.shape == (ann_count, 4) and s.labels.shape == (ann_count,)
    if ann_count:
        h, w = scan.shape
        assert (s.boxes[:, 0] < s.boxes[:, 2]).all() and (s.boxes[:, 2] <= w).all()
        assert (s.boxes[:, 3] <= h).all()


def test_coco_source_carries_each_boxs_hiding_place_through_the_cache(
    synth_dir: Path, tmp_path: Path
):
    coco = json.loads((synth_dir / "annotations.json").read_text())
    by_image: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["concealment"])
    data = CocoScans(synth_dir, cache=tmp_path / "cache")
    for k, image in enumerate(coco["images"]):
        expected = tuple(by_image.get(image["id"], []))
        assert data[k].places == expected  # decoded and written to the cache
        assert data[k].places == expected  # read back from the cache
    assert any(by_image.values())
    summary = summarize(data)
    assert sum(summary["concealments"].values()) == len(coco["annotations"])


def test_eight_bit_export_is_an_8bit_single_energy_scan_of_the_same_cargo(synth_dir: Path):
    scan = CocoScans(synth_dir).labelled(0).scan
    out = eight_bit_export(scan, np.random.default_rng(0))
    assert out.high.dtype == np.uint8 and out.bit_depth == 8 and out.low is None
    assert out.shape == scan.shape
    # Tone curves are monotone: what is denser in the 16-bit scan is darker in the
    # export (rank correlation of the attenuations, on a sample of pixels).
    a16 = attenuation(scan.high).ravel()[::97]
    a8 = attenuation(out.high).ravel()[::97]
    ranks = np.corrcoef(np.argsort(np.argsort(a16)), np.argsort(np.argsort(a8)))[0, 1]
    assert ranks > 0.9
    again = eight_bit_export(scan, np.random.default_rng(0))
    np.testing.assert_array_equal(again.high, out.high)


def test_coco_source_maps_names_to_the_models_category_order(synth_dir: Path):
    reordered = list(reversed(CATEGORIES))
    data = CocoScans(synth_dir, categories=reordered)
    plain = CocoScans(synth_dir)
    for k in range(len(data)):
        names = [reordered[i] for i in data.items[k][3]]
        assert names == [CATEGORIES[i] for i in plain.items[k][3]]


def test_coco_source_rejects_categories_the_model_lacks(synth_dir: Path):
    data = CocoScans(synth_dir)
    used = {CATEGORIES[i] for item in data.items for i in item[3]}
    with pytest.raises(ValueError, match="not in the model's list"):
        CocoScans(synth_dir, categories=[c for c in CATEGORIES if c not in used] or ["other"])


def test_coco_source_says_what_is_missing(tmp_path: Path):
    with pytest.raises(ValueError, match=r"no annotations\.json"):
        CocoScans(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoScans(tmp_path)


def test_yolo_source_reads_normalised_boxes_and_an_optional_low_channel(yolo_dir: Path):
    data = YoloScans(yolo_dir, categories=["firearm", "narcotics"])
    assert len(data) == 2
    a, b = data[0], data[1]
    np.testing.assert_allclose(a.boxes, [[90, 40, 150, 60]], atol=1e-4)
    assert a.labels.tolist() == [1]  # "narcotics" in the model's order
    assert a.has_low and not b.has_low
    assert b.clean and b.boxes.shape == (0, 4)
    # The dense block is where the label says: attenuation is high inside it.
    assert a.image[0, 45:55, 100:140].mean() > 5 * a.image[0, 5:20, 5:50].mean()


def test_yolo_source_rejects_bad_label_lines(yolo_dir: Path):
    (yolo_dir / "labels" / "b.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(ValueError, match=r"b\.txt:1: expected"):
        YoloScans(yolo_dir)[1]


def test_mixed_sources_are_drawn_by_weight(synth_dir: Path, yolo_dir: Path):
    coco = CocoScans(
        synth_dir, categories=["narcotics", "firearm", "cigarettes", "currency", "person"]
    )
    yolo = YoloScans(yolo_dir, categories=coco.categories)
    mixed = MixedScans([(coco, 1.0), (yolo, 3.0)])
    assert len(mixed) == 5
    assert mixed[4].source.startswith("yolo:")
    picks = mixed.epoch_indices(4000, np.random.default_rng(0))
    share_yolo = float(np.mean(picks >= 3))
    assert share_yolo == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="categories"):
        MixedScans([(CocoScans(synth_dir), 1.0), (YoloScans(yolo_dir), 1.0)])


def test_weighted_draws_favour_scans_whose_threats_weigh_more(yolo_dir: Path):
    # a.png holds one narcotics box, b.png none. Weighing narcotics 4 draws a
    # four times as often as the clean scan, even though it is a's only box.
    yolo = YoloScans(yolo_dir)
    mixed = MixedScans([(yolo, 1.0)])
    aug = Augment(target_weights=(4.0, 1.0))
    picks = mixed.epoch_indices(4000, np.random.default_rng(1), aug.scan_weight)
    assert float(np.mean(picks == 0)) == pytest.approx(0.8, abs=0.03)
    plain = mixed.epoch_indices(4000, np.random.default_rng(1))
    assert float(np.mean(plain == 0)) == pytest.approx(0.5, abs=0.03)
    # A scan weighs the mean of its boxes: category times place.
    tyre = Augment(target_weights=(2.0, 1.0), place_weights=(("tyre", 3.0),))
    assert tyre.scan_weight(np.array([0, 1]), ("tyre", "load")) == pytest.approx((6 + 1) / 2)
    assert tyre.scan_weight(np.array([], np.int64), ()) == 1.0


def _toy_sample() -> Sample:
    image = np.zeros((2, 200, 400), np.float32)
    image[:, 50:90, 300:360] = 0.5
    return Sample(image, np.array([[300, 50, 360, 90]], np.float32), np.array([2]), True, "toy")


def test_flip_moves_boxes_with_the_image():
    aug = Augment(
        crop_hw=None, flip_p=1.0, scale_range=(1.0, 1.0), row_gain_sigma=0, noise_p=0, drop_low_p=0
    )
    out = aug(_toy_sample(), np.random.default_rng(0))
    # albumentations moves boxes in float32 coordinates normalised to the image
    np.testing.assert_allclose(out.boxes, [[40, 50, 100, 90]], atol=1e-4)
    x0, y0, x1, y1 = out.boxes[0].astype(int)
    assert out.image[0, y0:y1, x0:x1].min() == pytest.approx(0.5)


def test_scale_and_crop_keep_boxes_on_the_object():
    aug = Augment(
        crop_hw=(128, 128),
        flip_p=0.0,
        scale_range=(0.7, 1.3),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=0,
        object_crop_p=1.0,
    )
    rng = np.random.default_rng(3)
    for _ in range(20):
        out = aug(_toy_sample(), rng)
        assert out.image.shape == (2, 128, 128)
        assert len(out.boxes) == 1
        x0, y0, x1, y1 = np.round(out.boxes[0]).astype(int)
        inside = out.image[0, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
        assert inside.size and inside.mean() == pytest.approx(0.5, abs=0.02)


def test_object_crops_keep_a_person_sized_threat_whole():
    # A 300 px tall object in a 320 px crop: zooming in (up to 1.25x) or
    # centring loosely would cut it; the crop keeps it whole and unzoomed-enough.
    image = np.zeros((2, 800, 2000), np.float32)
    image[:, 250:550, 900:1000] = 0.5
    s = Sample(image, np.array([[900, 250, 1000, 550]], np.float32), np.array([4]), True, "toy")
    aug = Augment(
        crop_hw=(320, 320),
        flip_p=0.0,
        scale_range=(0.8, 1.25),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=0,
        object_crop_p=1.0,
    )
    rng = np.random.default_rng(5)
    for _ in range(20):
        out = aug(s, rng)
        assert len(out.boxes) == 1
        x0, y0, x1, y1 = out.boxes[0]
        # Not clipped by the crop's edge: the 1:3 shape survives, and the scale
        # stays within the augmentation's range.
        assert (y1 - y0) / (x1 - x0) == pytest.approx(3.0, rel=0.02)
        assert 0.8 * 300 - 1 <= y1 - y0 <= 0.95 * 320 + 1


def test_crop_target_weights_choose_which_threat_a_crop_is_cut_around():
    # Two threats far apart: a 100 px crop holds one or the other. With a zero
    # weight for label 0 every object crop is cut around the label-3 box.
    image = np.zeros((2, 400, 2000), np.float32)
    boxes = np.array([[100, 150, 140, 190], [1800, 150, 1840, 190]], np.float32)
    s = Sample(image, boxes, np.array([0, 3]), True, "toy")
    kwargs: dict[str, Any] = dict(
        crop_hw=(100, 100), flip_p=0, scale_range=(1.0, 1.0), row_gain_sigma=0, noise_p=0
    )
    weighted = Augment(**kwargs, drop_low_p=0, object_crop_p=1.0, target_weights=(0, 1, 1, 1, 1))
    plain = Augment(**kwargs, drop_low_p=0, object_crop_p=1.0)
    rng = np.random.default_rng(8)
    kept = [aug(s, rng).labels.tolist() for aug in [weighted] * 20]
    assert kept == [[3]] * 20
    seen = {tuple(plain(s, rng).labels.tolist()) for _ in range(20)}
    assert seen == {(0,), (3,)}


def test_place_weights_choose_the_hidden_threat_and_places_follow_the_crop():
    # Same two labels, told apart only by where they are hidden: a weight of 0
    # for "load" and 5 for "tyre" cuts every crop around the tyre box, and the
    # kept box keeps its place.
    image = np.zeros((2, 400, 2000), np.float32)
    boxes = np.array([[100, 150, 140, 190], [1800, 150, 1840, 190]], np.float32)
    s = Sample(image, boxes, np.array([1, 1]), True, "toy", places=("load", "tyre"))
    aug = Augment(
        crop_hw=(100, 100),
        flip_p=0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=0,
        object_crop_p=1.0,
        place_weights=(("load", 0.0), ("tyre", 5.0)),
    )
    rng = np.random.default_rng(3)
    outs = [aug(s, rng) for _ in range(20)]
    assert all(o.places == ("tyre",) for o in outs)
    assert all(o.boxes[0, 0] > 0 for o in outs)  # the tyre box, not an empty crop
    # Category and place weights multiply: a category weighted 0 gets no crops
    # even in a place weighted 5, so the label-1 box in the load wins every time.
    both = replace(aug, target_weights=(0, 1, 1, 1, 1), place_weights=(("tyre", 5.0),))
    s2 = replace(s, labels=np.array([0, 1]), places=("tyre", "load"))
    assert [both(s2, rng).places for _ in range(10)] == [("load",)] * 10


def test_crops_drop_objects_mostly_outside_them():
    aug = Augment(
        crop_hw=(100, 100),
        flip_p=0.0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=0,
        object_crop_p=0.0,
    )
    seen_empty = False
    for seed in range(30):
        out = aug(_toy_sample(), np.random.default_rng(seed))
        for b in out.boxes:
            assert 0 <= b[0] < b[2] <= 100 and 0 <= b[1] < b[3] <= 100
        seen_empty |= len(out.boxes) == 0
    assert seen_empty


def test_low_energy_dropout_copies_high_like_a_single_energy_scan():
    aug = Augment(
        crop_hw=None, flip_p=0, scale_range=(1.0, 1.0), row_gain_sigma=0, noise_p=0, drop_low_p=1.0
    )
    s = _toy_sample()
    s.image[1] *= 1.2
    out = aug(s, np.random.default_rng(0))
    assert not out.has_low
    np.testing.assert_array_equal(out.image[1], out.image[0])


def test_photon_noise_grows_with_attenuation():
    aug = Augment(
        crop_hw=None,
        flip_p=0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0,
        noise_p=1.0,
        drop_low_p=0,
        flux_range=(2e4, 2e4),
    )
    image = np.zeros((2, 100, 200), np.float32)
    image[:, :, 100:] = 4.0 / ATTENUATION_SCALE  # a = 4
    image[:, :, :100] = 1.0 / ATTENUATION_SCALE  # a = 1
    s = Sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), True, "toy")
    out = aug(s, np.random.default_rng(0))
    sd_thin = (out.image[0, :, :100] * ATTENUATION_SCALE).std()
    sd_thick = (out.image[0, :, 100:] * ATTENUATION_SCALE).std()
    # sigma(a) = exp(a/2)/sqrt(N): a = 4 is e^1.5 ~ 4.5x noisier than a = 1.
    assert sd_thick / sd_thin == pytest.approx(np.exp(1.5), rel=0.1)
    assert sd_thin == pytest.approx(np.exp(0.5) / np.sqrt(2e4), rel=0.1)


def test_cache_serves_the_same_scan_memory_mapped(synth_dir: Path, tmp_path: Path):
    cached = CocoScans(synth_dir, cache=tmp_path / "cache")
    first = cached[1]  # decodes, pre-processes and writes the cache
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 1 and "preprocess-v" in str(files[0].parent)
    again = cached[1]
    assert isinstance(again.image, np.memmap) and again.image.dtype == np.float16
    np.testing.assert_allclose(again.image, first.image, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(again.boxes, first.boxes, atol=1e-4)
    assert again.has_low == first.has_low
    out = Augment(crop_hw=(64, 96))(again, np.random.default_rng(0))
    assert out.image.dtype == np.float32 and out.image.shape == (2, 64, 96)


def _export_only(quality: int, **tone: Any) -> Augment:
    """An Augment that only turns every sample into an 8-bit JPEG export (given tone curve)."""
    return Augment(
        crop_hw=None,
        flip_p=0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=1.0,
        jpeg_p=1.0,
        jpeg_quality=(quality, quality),
        **tone,
    )


def test_eight_bit_jpeg_export_quantises_and_saturates_like_such_files():
    aug = _export_only(quality=90, tone_power_p=1.0, tone_k=(1.0, 1.0))  # linear in T
    image = np.zeros((2, 64, 192), np.float32)
    image[:, :, :64] = 0.5 / ATTENUATION_SCALE  # thin: survives 8 bits well
    image[:, :, 64:128] = np.linspace(2.0, 3.0, 64, dtype=np.float32) / ATTENUATION_SCALE
    image[:, :, 128:] = 8.0 / ATTENUATION_SCALE  # beyond what 8 bits can express
    s = Sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), True, "toy")
    out = aug(s, np.random.default_rng(0))
    a = out.image[0] * ATTENUATION_SCALE
    assert not out.has_low
    np.testing.assert_array_equal(out.image[1], out.image[0])
    assert np.median(a[8:-8, 8:56]) == pytest.approx(0.5, abs=0.03)
    # Saturation: T can go no lower than 1/256 whatever the true attenuation.
    assert a[:, 136:].max() <= np.log(256) + 1e-5
    # Quantisation: a smooth ramp over a = 2..3 comes back in 8-bit steps
    # (T from 0.135 to 0.05 of the air level: about 20 counts).
    ramp = a[32, 72:120]
    assert 5 <= len(np.unique(np.round(ramp, 4))) <= 40
    assert np.corrcoef(ramp, np.linspace(2.0, 3.0, 64)[8:56])[0, 1] > 0.9


def test_eight_bit_export_with_a_log_tone_curve_reads_as_compressed_attenuation():
    """Real exports are near linear in attenuation (bench/realism.py fits a_max ~ 3.3);
    read back as transmission, thin steel looks thinner and a_max and beyond saturate."""
    a_max = 3.3
    aug = _export_only(quality=95, tone_power_p=0.0, tone_a_max=(a_max, a_max), tone_p=(1.0, 1.0))
    image = np.zeros((2, 64, 192), np.float32)
    image[:, :, :64] = 0.5 / ATTENUATION_SCALE
    image[:, :, 64:128] = 2.0 / ATTENUATION_SCALE
    image[:, :, 128:] = 4.0 / ATTENUATION_SCALE  # beyond a_max: black in the export
    s = Sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), True, "toy")
    a = aug(s, np.random.default_rng(0)).image[0] * ATTENUATION_SCALE
    seen = [float(np.median(a[8:-8, x0 + 8 : x0 + 56])) for x0 in (0, 64, 128)]
    assert seen[0] == pytest.approx(-np.log(1 - 0.5 / a_max), abs=0.02)  # ~0.16, not 0.5
    assert seen[1] == pytest.approx(-np.log(1 - 2.0 / a_max), abs=0.05)  # ~0.93, not 2
    assert seen[2] == pytest.approx(np.log(256), abs=0.05)


@pytest.mark.parametrize("share", [0.0, 0.15, 0.5])
def test_eight_bit_share_sets_how_many_samples_are_exports(share: float):
    drop_low_p, jpeg_p = single_energy_draws(share)
    aug = Augment(
        crop_hw=None,
        flip_p=0,
        scale_range=(1.0, 1.0),
        row_gain_sigma=0,
        noise_p=0,
        drop_low_p=drop_low_p,
        jpeg_p=jpeg_p,
    )
    ramp = np.linspace(0.1, 3.0, 24 * 40, dtype=np.float32).reshape(24, 40) / ATTENUATION_SCALE
    s = Sample(
        np.stack([ramp, ramp]), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), True, "t"
    )
    kinds = {"dual": 0, "16-bit single": 0, "8-bit": 0}
    rng = np.random.default_rng(4)
    draws = 1500
    for _ in range(draws):
        out = aug(s, rng)
        if out.has_low:
            kinds["dual"] += 1
        elif len(np.unique(out.image[0])) <= 256:  # 8-bit counts: at most 256 levels
            kinds["8-bit"] += 1
        else:
            kinds["16-bit single"] += 1
    assert kinds["8-bit"] / draws == pytest.approx(share, abs=0.04)
    assert kinds["16-bit single"] / draws == pytest.approx(SINGLE_ENERGY_16BIT_SHARE, abs=0.04)


def test_the_default_eight_bit_share_is_what_augment_always_drew():
    assert single_energy_draws(0.15) == pytest.approx((Augment.drop_low_p, Augment.jpeg_p))


def test_eight_bit_share_beyond_what_can_be_drawn_is_refused():
    with pytest.raises(ValueError, match="within"):
        single_energy_draws(0.9)
