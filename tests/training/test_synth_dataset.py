"""`cargoscan synth`: COCO output, 16-bit images, labels on the threats, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from cargoscan.cli import main
from inference.preprocess import attenuation
from inference.scan import load_scan
from training.synth.dataset import write_dataset
from training.synth.scene import CONTAINER_PLACES, SynthConfig, generate_scan
from training.synth.threats import CATEGORIES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, count=6, seed=11, workers=2, progress=False)
    return out


def test_coco_file_is_valid_and_complete(dataset: Path):
    coco = COCO(str(dataset / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CATEGORIES)
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 6
    # A third clean, spread evenly: exactly 2 of 6.
    assert sum(im["clean"] for im in images) == 2
    for im in images:
        assert (dataset / im["file_name"]).is_file()
        assert (dataset / im["low_file_name"]).is_file()
        assert im["scanner"]["high_mv"] == 6.0 and im["scanner"]["low_mv"] == 4.0
        x0, y0, x1, y1 = im["cargo_region"]
        assert 0 <= x0 < x1 <= im["width"] and 0 <= y0 < y1 <= im["height"]
        assert {"true_manifest", "declared_manifest", "manifest_discrepancy"} <= im.keys()
        for line in im["true_manifest"]:
            assert {"hs_code", "description", "declared_weight_kg", "quantity"} <= line.keys()
            assert line["declared_weight_kg"] > 0
        if not im["clean"]:
            assert coco.getAnnIds(imgIds=[im["id"]])


def test_images_are_16_bit_dual_energy_of_the_declared_size(dataset: Path):
    coco = json.loads((dataset / "annotations.json").read_text())
    for im in coco["images"][:3]:
        scan = load_scan(dataset / im["file_name"], dataset / im["low_file_name"])
        assert scan.bit_depth == 16 and scan.high.dtype == np.uint16
        assert scan.shape == (im["height"], im["width"])
        # At 5 mm pitch a container truck is ~800 px high and 1500-4500 px long.
        assert scan.shape[0] == 800 and 1500 < scan.shape[1] < 4500
        # Low energy attenuates more than high wherever there is matter.
        a_high, a_low = attenuation(scan.high), attenuation(scan.low)
        dense = a_high > 1.0
        assert np.median(a_low[dense] / a_high[dense]) > 1.05


def test_masks_boxes_and_areas_agree_and_sit_on_added_attenuation(dataset: Path):
    coco = json.loads((dataset / "annotations.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    assert coco["annotations"], "a 6-scan set with 4 threat scans must hold annotations"
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        rle = mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"])
        m = mask_utils.decode(rle).astype(bool)
        assert m.sum() == ann["area"] > 0
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert ann["mass_kg"] > 0


def test_threats_change_attenuation_where_their_labels_are():
    """Regenerate a threat scan without its threats: the image differs under the labels.

    Same seed and index with clean_fraction=1 gives the same vehicle and load
    (the random stream only diverges at threat placement). A threat may make
    its place darker (a pistol) or lighter (cigarettes replacing denser cargo);
    either way the change must sit under its mask, well above the noise elsewhere.
    """
    scan = generate_scan(0, 11, SynthConfig())
    clean = generate_scan(0, 11, SynthConfig(clean_fraction=1.0))
    assert scan.threats and not clean.threats
    diff = np.abs(attenuation(scan.high) - attenuation(clean.high))
    labelled = np.zeros(diff.shape, bool)
    for t in scan.threats:
        labelled |= t.mask
    elsewhere = float(np.median(diff[~labelled]))
    for t in scan.threats:
        assert float(diff[t.mask].mean()) > 10 * elsewhere, t.category


@pytest.mark.slow
def test_same_arguments_give_identical_bytes_whatever_the_workers(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(a, count=3, seed=5, workers=1, progress=False)
    write_dataset(b, count=3, seed=5, workers=2, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    other = generate_scan(0, 6, SynthConfig())
    assert not np.array_equal(
        other.high[:, :100], load_scan(a / "images/000000_high.png").high[:, :100]
    )


def test_cli_synth_writes_a_set_and_rejects_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--count", "1", "--seed", "2", "--workers", "1"]) == 0
    assert (out / "annotations.json").is_file()
    assert main(["synth", "--out", str(out), "--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


def test_each_container_records_the_threat_mass_hidden_in_its_cargo_space():
    """`hidden_kg` is the mass of the threats in the load, on or in the floor and behind
    the front wall (goods the declaration leaves out); a stowaway in the cab is not in
    the container. Seed 7, scan 4: a 114 kg person in the cab and 2.5 kg on the floor."""
    cfg = SynthConfig()
    for index in (0, 1, 2, 4, 7):
        scan = generate_scan(index, 7, cfg)
        inside = sum(t.mass_kg for t in scan.threats if t.where in CONTAINER_PLACES)
        hidden = sum(c["hidden_kg"] for c in scan.info["containers"])
        assert hidden == pytest.approx(inside, abs=0.2), index
    scan = generate_scan(4, 7, cfg)
    assert {t.where for t in scan.threats} == {"cab", "floor"}
    assert sum(c["hidden_kg"] for c in scan.info["containers"]) < 5.0
    assert generate_scan(2, 7, cfg).info["containers"][0]["hidden_kg"] == 0.0  # no threat
