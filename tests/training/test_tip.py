"""`cargoscan tip`: threats projected into scans, read by the training reader, physical,
traceless, deterministic, and clear about bad input.

Backgrounds are synthetic scans made here (never the real reference scans): at
10 mm pitch so that they are small, written as 8-bit JPEG exports and as 16-bit
dual-energy PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cargoscan.cli import main
from inference.preprocess import attenuation
from inference.scan import load_scan
from training.augment import Augment
from training.data import CocoScans, open_source
from training.synth.physics import linac_spectrum
from training.synth.scene import SynthConfig, generate_scan
from training.synth.threats import CATEGORIES
from training.tip import TipConfig, check_dataset, write_tip_dataset
from training.tip.background import (
    ExportCurve,
    estimate_export_curve,
    estimate_noise,
    jpeg_quality,
)
from training.tip.cargo_space import find_cargo_space
from training.tip.project import ThreatPatch, attenuation_change

SEED = 3


@pytest.fixture(scope="module")
def synthetic_scans() -> list:
    return [generate_scan(i, 5, SynthConfig(pitch_mm=10.0)) for i in (0, 1)]


@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory: pytest.TempPathFactory, synthetic_scans: list) -> Path:
    """8-bit JPEG exports (the reference scans' kind) and 16-bit dual-energy PNGs."""
    root = tmp_path_factory.mktemp("backgrounds")
    (root / "eight" / "sub").mkdir(parents=True)
    (root / "sixteen").mkdir()
    for i, scan in enumerate(synthetic_scans):
        counts, _ = Augment(tone_power_p=0.0).eight_bit_counts(
            attenuation(scan.high), np.random.default_rng(i)
        )
        folder = root / "eight" / ("sub" if i else "")
        cv2.imwrite(str(folder / f"scan{i}.jpg"), counts, [cv2.IMWRITE_JPEG_QUALITY, 85])
        cv2.imwrite(str(root / "sixteen" / f"scan{i}_high.png"), scan.high)
        cv2.imwrite(str(root / "sixteen" / f"scan{i}_low.png"), scan.low)
    # The 8-bit scans come under a licence, two folders above the deeper one.
    (root / "LICENSE").write_text("\n   Example Scans Licence 1.0\nterms...\n")
    return root


@pytest.fixture(scope="module")
def outputs(backgrounds: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8-bit: 24 outputs (a third clean) and the all-clean run of the same seed;
    16-bit: 4 outputs with one worker and with two."""
    out = tmp_path_factory.mktemp("tip")
    made = {
        "eight": out / "eight",
        "eight_clean": out / "eight_clean",
        "sixteen": out / "sixteen",
        "sixteen_w2": out / "sixteen_w2",
    }
    write_tip_dataset(
        backgrounds / "eight", made["eight"], count=24, seed=SEED, workers=1, progress=False
    )
    write_tip_dataset(
        backgrounds / "eight",
        made["eight_clean"],
        count=6,
        seed=SEED,
        workers=1,
        config=TipConfig(clean_fraction=1.0),
        progress=False,
    )
    for key, workers in (("sixteen", 1), ("sixteen_w2", 2)):
        write_tip_dataset(
            backgrounds / "sixteen", made[key], count=4, seed=SEED, workers=workers, progress=False
        )
    return made


@pytest.mark.parametrize("kind", ["eight", "sixteen"])
def test_the_training_reader_reads_it_with_boxes_on_the_masks(outputs: dict[str, Path], kind: str):
    source = open_source(outputs[kind])
    assert isinstance(source, CocoScans)
    assert source.categories == list(CATEGORIES)
    coco = json.loads((outputs[kind] / "annotations.json").read_text())
    assert coco["info"]["generator"] == "cargoscan tip"
    anns = coco["annotations"]
    assert anns, "some threats were projected"
    assert {a["concealment"] for a in anns} <= {
        "load",
        "floor",
        "floor_cavity",
        "front_wall",
        "tyre",
        "cab",
        "reefer_unit",
    }
    images = {im["id"]: im for im in coco["images"]}
    for ann in anns:
        x, y, w, h = ann["bbox"]
        image = images[ann["image_id"]]
        assert min(x, y) >= 0 and x + w <= image["width"] and y + h <= image["height"]
        rle = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        assert int(mask_utils.area(rle)) == ann["area"]
        assert list(mask_utils.toBbox(rle)) == ann["bbox"]
        assert np.isfinite(ann["contrast"]) and ann["mass_kg"] > 0
    for image in coco["images"]:
        tip = image["tip"]
        assert tip["background"].endswith((".jpg", ".png")) and tip["cargo_box"] is not None
        assert tip["pitch_mm"]["x"] > 0 and tip["pitch_mm"]["y"] > 0
    for i in range(len(source)):
        sample = source[i]  # decoded and pre-processed as training does
        assert sample.image.shape[1:] == (images[i + 1]["height"], images[i + 1]["width"])
        assert len(sample.labels) == sum(a["image_id"] == i + 1 for a in anns)


@pytest.mark.parametrize(
    ("kind", "suffix", "dtype", "has_low"),
    [("eight", ".jpg", np.uint8, False), ("sixteen", ".png", np.uint16, True)],
)
def test_outputs_keep_the_sources_format(
    outputs: dict[str, Path], kind: str, suffix: str, dtype: type, has_low: bool
):
    coco = json.loads((outputs[kind] / "annotations.json").read_text())
    for image in coco["images"]:
        assert image["file_name"].endswith(suffix)
        assert ("low_file_name" in image) is has_low
        low = image.get("low_file_name")
        scan = load_scan(outputs[kind] / image["file_name"], outputs[kind] / low if low else None)
        assert scan.high.dtype == dtype and scan.has_low is has_low
        assert image["bit_depth"] == (8 if dtype == np.uint8 else 16)
        if kind == "eight":
            assert image["tip"]["jpeg_quality"] == 85  # re-encoded as the source was


def test_threats_darken_their_box_and_nothing_else(outputs: dict[str, Path]):
    """Against the all-clean run of the same seed (same background for each index)."""
    coco = json.loads((outputs["eight"] / "annotations.json").read_text())
    clean_coco = json.loads((outputs["eight_clean"] / "annotations.json").read_text())
    checked = 0
    for image, clean in zip(coco["images"][:6], clean_coco["images"], strict=True):
        assert image["tip"]["background"] == clean["tip"]["background"]
        made = load_scan(outputs["eight"] / image["file_name"]).high.astype(np.float64)
        plain = load_scan(outputs["eight_clean"] / clean["file_name"]).high.astype(np.float64)
        near = np.zeros(made.shape, bool)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            near[max(y - 24, 0) : y + h + 24, max(x - 24, 0) : x + w + 24] = True
            if ann["contrast"] > 0.05:
                box = (slice(y, y + h), slice(x, x + w))
                assert made[box].mean() < plain[box].mean() - 1.0, ann
                checked += 1
        np.testing.assert_array_equal(made[~near], plain[~near])
    assert checked >= 2


def test_same_bytes_whatever_the_number_of_workers(outputs: dict[str, Path]):
    one, two = outputs["sixteen"], outputs["sixteen_w2"]
    assert (one / "annotations.json").read_bytes() == (two / "annotations.json").read_bytes()
    for path in sorted((one / "images").iterdir()):
        assert path.read_bytes() == (two / "images" / path.name).read_bytes()


def test_projected_dual_energy_darkens_low_more_than_high(outputs: dict[str, Path], backgrounds):
    coco = json.loads((outputs["sixteen"] / "annotations.json").read_text())
    ann = max(coco["annotations"], key=lambda a: a["contrast"])
    image = next(im for im in coco["images"] if im["id"] == ann["image_id"])
    made = load_scan(
        outputs["sixteen"] / image["file_name"], outputs["sixteen"] / image["low_file_name"]
    )
    source = load_scan(
        backgrounds / "sixteen" / image["tip"]["background"],
        backgrounds / "sixteen" / image["tip"]["background_low"],
    )
    rle = mask_utils.frPyObjects(ann["segmentation"], *made.shape)
    mask = mask_utils.decode(rle) > 0
    change = {
        energy: float(
            np.median(
                (attenuation(getattr(made, energy)) - attenuation(getattr(source, energy)))[mask]
            )
        )
        for energy in ("high", "low")
    }
    assert change["high"] > 0.05 and change["low"] > change["high"]


def test_whole_image_statistics_cannot_tell_clean_from_projected(outputs: dict[str, Path]):
    result = check_dataset(outputs["eight"])
    assert result.clean == 8 and result.projected == 16
    assert result.balanced_accuracy < 0.7, result


@pytest.mark.parametrize(("air", "quality"), [(230.0, 85), (252.0, 95)])
def test_export_curve_estimate_recovers_a_known_curve(
    synthetic_scans: list, air: float, quality: int
):
    """An export made with a known curve (linear in attenuation, black at 3.3) and air."""
    a = attenuation(synthetic_scans[0].high)
    truth = ExportCurve(air)
    counts = np.clip(np.rint(truth.grey(a)), 0, 255).astype(np.uint8)
    _, data = cv2.imencode(".jpg", counts, [cv2.IMWRITE_JPEG_QUALITY, quality])
    grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    curve = estimate_export_curve(grey)
    assert curve.air == pytest.approx(air, abs=1.5)
    inside = (a > 0.2) & (a < 3.0)
    error = np.abs(curve.attenuation(grey.astype(np.float32)) - a)[inside]
    assert np.median(error) < 0.03


@pytest.mark.parametrize("quality", [60, 75, 90])
def test_jpeg_quality_is_read_from_the_quantisation_table(tmp_path: Path, quality: int):
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    path = tmp_path / "q.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert jpeg_quality(path) == quality
    cv2.imwrite(str(tmp_path / "q.png"), image)
    assert jpeg_quality(tmp_path / "q.png") is None


def test_noise_model_follows_poisson_counts():
    rng = np.random.default_rng(1)
    level = np.repeat(np.linspace(2000, 50000, 64), 64).reshape(64, 64).T
    level = np.kron(level, np.ones((4, 4)))  # flat steps: the residual sees noise only
    counts = rng.poisson(level).astype(np.uint16)
    model = estimate_noise(counts)
    for value in (5000.0, 40000.0):
        assert model.std(np.array([value]))[0] == pytest.approx(np.sqrt(value), rel=0.25)


def test_cargo_box_and_pitch_on_a_synthetic_scan(synthetic_scans: list):
    """The synthetic scanner sees the whole wheel, so the box comes out too tall (the floor
    share is that of the reference scans); its roof, ends and horizontal pitch hold."""
    scan = synthetic_scans[0]
    space = find_cargo_space(attenuation(scan.high))
    x0, y0, x1, _ = space.box
    tx0, ty0, tx1, _ = scan.cargo_region
    assert abs(x0 - tx0) < 15 and abs(x1 - tx1) < 15 and abs(y0 - ty0) < 15
    assert space.pitch_x_mm == pytest.approx(10.0, rel=0.1)


def test_a_threat_adds_less_attenuation_behind_dense_cargo():
    """Beam hardening: the same steel plate behind 20 cm of steel adds less -ln T."""
    plate = np.full((9, 9), 20.0, np.float32)
    patch = ThreatPatch("firearm", "test", {"steel": plate}, plate, plate / 7.85, 1.0)
    spectrum = linac_spectrum(6.0)
    in_air = attenuation_change(patch, np.zeros((17, 17), np.float32), spectrum)[8, 8]
    behind = attenuation_change(patch, np.full((17, 17), 4.0, np.float32), spectrum)[8, 8]
    assert 0 < behind < in_air


def _error_line(stderr: str) -> str:
    """The one error line (progress bars aside): it ends stderr and is the only one."""
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln and "scan/s" not in ln]
    assert len(lines) == 1 and lines[0].startswith("cargoscan tip: "), stderr
    return lines[0]


def _colour_image(folder: Path) -> Path:
    image = np.zeros((400, 1500, 3), np.uint8)
    image[..., 0], image[..., 2] = 200, 30
    path = folder / "colour.png"
    cv2.imwrite(str(path), image)
    return path


def _tiny_image(folder: Path) -> Path:
    path = folder / "tiny.png"
    cv2.imwrite(str(path), np.full((30, 40), 128, np.uint8))
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda folder: folder, "no scan images"),
        (_colour_image, "colour image"),
        (_tiny_image, "too small for any threat"),
    ],
    ids=["empty-folder", "colour", "too-small"],
)
def test_bad_backgrounds_fail_with_one_line_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, expected: str
):
    folder = tmp_path / "bg"
    folder.mkdir()
    named = make(folder)
    out = tmp_path / "out"
    code = main(
        ["tip", "--backgrounds", str(folder), "--out", str(out), "--count", "2", "--workers", "1"]
    )
    message = _error_line(capsys.readouterr().err)
    assert code == 1
    assert expected in message and str(named) in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bg"]  # no OUT, no staging left


def test_unwritable_out_fails_with_one_line(
    backgrounds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    code = main(
        ["tip", "--backgrounds", str(backgrounds / "eight"), "--out", str(out), "--count", "1"]
    )
    assert code == 1 and str(out) in _error_line(capsys.readouterr().err)


def test_an_existing_folder_that_is_not_tip_output_is_left_alone(
    backgrounds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code = main(
        ["tip", "--backgrounds", str(backgrounds / "eight"), "--out", str(out), "--count", "1"]
    )
    assert code == 1 and "not an earlier" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_backgrounds_licence_travels_to_the_annotations_and_the_summary(
    outputs: dict[str, Path],
):
    from training.data import data_origin, open_source, summarize

    origin = data_origin(outputs["eight"])
    assert origin is not None and origin["generator"] == "cargoscan tip"
    (licence,) = origin["background_licences"]
    assert licence["title"] == "Example Scans Licence 1.0"
    assert licence["file"].endswith("LICENSE")
    summary = summarize(open_source(outputs["eight"], list(CATEGORIES)))
    assert summary["origin"] == origin
    assert data_origin(outputs["eight"] / "images") is None


@pytest.mark.parametrize("n", [62, 93, 60, 7])
def test_every_background_is_left_clean_as_often_as_any_other(n: int):
    """A third of the outputs clean, spread over every background: 900 outputs of the 62
    held-out scans leave each one clean 4 or 5 times (the rule before left 37 of them
    never clean and 25 up to 15 times), and each cycle through the backgrounds keeps
    about its third."""
    from training.tip.dataset import _is_clean

    for count in (3 * n, 900):
        per = [0] * n
        for i in range(count):
            per[i % n] += _is_clean(i, n, 1 / 3)
        assert max(per) - min(per) <= 1 and min(per) >= 1, (count, per)
        assert abs(sum(per) - count / 3) <= 1
    for cycle in range(5):
        share = sum(_is_clean(cycle * n + s, n, 1 / 3) for s in range(n)) / n
        assert abs(share - 1 / 3) <= 1 / n + 1e-9


def test_decoys_are_projected_unlabelled_and_leave_the_threats_as_they_were(
    backgrounds: Path, outputs: dict[str, Path], tmp_path: Path
):
    """Benign objects added as threats are (same physics, noise, encoding) but never
    annotated: clear of the threats, darker than the background under them, on clean
    outputs too; the threats themselves are the ones the same seed gives without decoys."""
    out = tmp_path / "decoys"
    write_tip_dataset(
        backgrounds / "eight", out, count=24, seed=SEED, workers=1,
        config=TipConfig(decoys=3), progress=False,
    )  # fmt: skip
    plain = json.loads((outputs["eight"] / "annotations.json").read_text())
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["annotations"] == plain["annotations"]  # the same threats, the same labels
    assert doc["info"]["config"]["decoys"] == 3 and "decoys" not in plain["info"]["config"]
    decoys = [(im, d) for im in doc["images"] for d in im["tip"]["decoys"]]
    assert len(decoys) >= 12 and {d["kind"].split(":")[0] for _, d in decoys} >= {
        "tools", "sacks", "cartons", "books"
    }  # fmt: skip
    assert any(im["clean"] for im, _ in decoys)  # threat-free outputs carry them as well
    boxes = {}
    for ann in doc["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    darker = 0
    for im, d in decoys:
        x, y, w, h = d["bbox"]
        for tx, ty, tw, th in boxes.get(im["id"], []):  # never on top of a threat
            assert x + w <= tx or tx + tw <= x or y + h <= ty or ty + th <= y
        mine = cv2.imread(str(out / im["file_name"]), cv2.IMREAD_GRAYSCALE)[y : y + h, x : x + w]
        theirs = cv2.imread(str(outputs["eight"] / im["file_name"]), cv2.IMREAD_GRAYSCALE)
        darker += float(mine.mean()) < float(theirs[y : y + h, x : x + w].mean()) - 0.5
    assert darker >= 0.8 * len(decoys)  # attenuation added (a few land where it is black)
    assert all(im["tip"].get("decoys") is None for im in plain["images"])
