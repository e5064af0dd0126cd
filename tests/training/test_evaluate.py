"""`cargoscan evaluate`: metrics.json in the issue's shape from a real export through the engine."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cargoscan.cli import main
from inference.engine import Engine, ModelError
from inference.preprocess import attenuation
from inference.scan import load_scan
from training.augment import eight_bit_export
from training.evaluate import box_attenuation, clean_scan_alarms, evaluate, resolution_line
from training.export import export
from training.model import CargoNet, ModelConfig
from training.synth.dataset import write_dataset
from training.synth.scene import SynthConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    write_dataset(data, count=6, seed=51, workers=1, progress=False)
    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    with torch.no_grad():
        net.heat.out.bias.fill_(-2.0)  # findings above the floor, as a trained model gives
        net.box.out.bias.fill_(2.0)  # boxes about 60 px across: threat-sized, not specks
    ckpt = root / "ck.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / "m.onnx")
    return root / "m.onnx", data


def test_metrics_json_has_the_agreed_shape_and_consistent_counts(setup, tmp_path: Path):
    model, data = setup
    assert (
        main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path)]) == 0
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    coco = json.loads((data / "annotations.json").read_text())
    assert m["clean_scans"] == sum(im["clean"] for im in coco["images"]) == 2
    assert m["threat_instances"] == len(coco["annotations"])
    assert set(m["categories"]) == {"firearm", "narcotics", "cigarettes", "currency", "person"}
    for cat in m["categories"].values():
        assert set(cat["detection_rate_at_far"]) == {"0.01", "0.001"}
        assert set(cat["threshold_at_far"]) == {"0.01", "0.001"}
        for rate in cat["detection_rate_at_far"].values():
            assert rate is None or 0.0 <= rate <= 1.0
    assert set(m["scan"]["detection_rate_at_far"]) == {"0.01", "0.001"}
    assert 0.0 <= m["map50"] <= 1.0 and 0.0 <= m["map"] <= m["map50"] + 1e-9
    # Every threat falls in one attenuation band, per category and over all of them.
    bands = m["by_attenuation"]
    assert bands["far"] == "0.01" and list(bands["all"]) == ["<3", "3-5", "5-7", ">=7"]
    assert sum(b["instances"] for b in bands["all"].values()) == m["threat_instances"]
    for name, per_band in bands["categories"].items():
        in_coco = sum(
            a["category_id"] == next(c["id"] for c in coco["categories"] if c["name"] == name)
            for a in coco["annotations"]
        )
        assert sum(b["instances"] for b in per_band.values()) == in_coco
    # synth records each threat's contrast and hiding place: every threat counts in
    # one contrast band (by the size of its contrast) and under its own place.
    by_contrast = m["by_contrast"]["all"]
    assert list(by_contrast) == ["<0.1", "0.1-0.3", "0.3-1", ">=1"]
    sizes = np.abs([a["contrast"] for a in coco["annotations"]])
    assert [b["instances"] for b in by_contrast.values()] == [
        int(np.sum((sizes >= lo) & (sizes < hi)))
        for lo, hi in [(0, 0.1), (0.1, 0.3), (0.3, 1.0), (1.0, np.inf)]
    ]
    places = m["by_concealment"]["all"]
    assert {p: b["instances"] for p, b in places.items()} == dict(
        Counter(a["concealment"] for a in coco["annotations"])
    )
    for split in (by_contrast, places):
        assert sum(b["detected"] for b in split.values()) == sum(
            b["detected"] for b in bands["all"].values()
        )


def test_evaluate_refuses_a_missing_model(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    _, data = setup
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "x.onnx"),
                "--data",
                str(data),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "missing" in capsys.readouterr().err


def _as_yolo(coco_dir: Path, yolo_dir: Path) -> None:
    """The same scans and labels as a YOLO folder (low energy in low/)."""
    coco = json.loads((coco_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    order = list(names)
    (yolo_dir / "images").mkdir(parents=True)
    (yolo_dir / "low").mkdir()
    (yolo_dir / "labels").mkdir()
    (yolo_dir / "classes.txt").write_text("\n".join(names[i] for i in order) + "\n")
    for im in coco["images"]:
        stem = f"scan{im['id']:03d}"
        shutil.copy(coco_dir / im["file_name"], yolo_dir / "images" / f"{stem}.png")
        shutil.copy(coco_dir / im["low_file_name"], yolo_dir / "low" / f"{stem}.png")
        rows = []
        for a in coco["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                cx, cy = (x + w / 2) / im["width"], (y + h / 2) / im["height"]
                rows.append(
                    f"{order.index(a['category_id'])} {cx:.8f} {cy:.8f} "
                    f"{w / im['width']:.8f} {h / im['height']:.8f}"
                )
        (yolo_dir / "labels" / f"{stem}.txt").write_text("\n".join(rows) + "\n")


def test_a_yolo_folder_evaluates_like_the_same_scans_in_coco(setup, tmp_path: Path):
    model, data = setup
    _as_yolo(data, tmp_path / "yolo")
    coco_m = evaluate(model, data, tmp_path / "a", pictures=False, progress=False)
    yolo_m = evaluate(model, tmp_path / "yolo", tmp_path / "b", pictures=False, progress=False)
    assert yolo_m["threat_instances"] == coco_m["threat_instances"] > 0
    assert yolo_m["clean_scans"] == coco_m["clean_scans"]
    assert yolo_m["map50"] == pytest.approx(coco_m["map50"], abs=1e-3)
    for name, cat in coco_m["categories"].items():
        assert yolo_m["categories"][name]["detection_rate_at_far"] == pytest.approx(
            cat["detection_rate_at_far"], abs=1e-6
        )


def test_single_energy_evaluation_drops_the_low_channel(setup, tmp_path: Path):
    model, data = setup
    dual = evaluate(model, data, tmp_path / "dual", pictures=False, progress=False)
    single = evaluate(model, data, tmp_path / "single", pictures=False, progress=False,
                      single_energy=True)  # fmt: skip
    assert single["single_energy"] and not dual["single_energy"]
    # Another input, so other scores: the low channel really was replaced.
    assert single["map50"] != dual["map50"] or single["categories"] != dual["categories"]


@pytest.mark.slow
def test_eight_bit_evaluation_judges_the_exports_by_the_cards_eight_bit_thresholds(
    setup, tmp_path: Path
):
    model, data = setup
    copy = _with_thresholds(model, tmp_path / "m", 1.0)  # 16-bit: nothing alarms
    card = json.loads(copy.with_suffix(".json").read_text())
    card["thresholds_8bit"] = dict.fromkeys(card["categories"], 0.0)  # 8-bit: any finding
    copy.with_suffix(".json").write_text(json.dumps(card))
    dual = evaluate(copy, data, tmp_path / "dual", pictures=False, progress=False)
    eight = evaluate(copy, data, tmp_path / "eight", pictures=False, progress=False,
                     eight_bit=True)  # fmt: skip
    assert eight["eight_bit"] and eight["single_energy"] and not dual["eight_bit"]
    assert dual["at_card_thresholds"]["scan"]["false_alarm_rate"] == 0.0
    assert eight["at_card_thresholds"]["scan"]["false_alarm_rate"] == 1.0
    assert eight["at_card_thresholds"]["thresholds"] == card["thresholds_8bit"]
    assert eight["at_card_thresholds"]["thresholds_by_bit_depth"] == {"8": card["thresholds_8bit"]}
    # Seeded per scan: a second run sees the same exports.
    again = evaluate(copy, data, tmp_path / "again", pictures=False, progress=False,
                     eight_bit=True)  # fmt: skip
    assert again["categories"] == eight["categories"]
    args = ["evaluate", "--model", str(copy), "--data", str(data), "--out", str(tmp_path / "e")]
    assert main([*args, "--no-pictures", "--record-in-card", "--eight-bit"]) == 0
    recorded = json.loads(copy.with_suffix(".json").read_text())["metrics"]["test_8bit"]
    assert recorded["scan"] == eight["scan"]


def test_evaluation_pictures_are_written(setup, tmp_path: Path):
    model, data = setup
    evaluate(model, data, tmp_path, progress=False)
    for name in (
        "pr_curves.png",
        "detection_vs_far.png",
        "detection_by_attenuation.png",
        "detection_by_contrast.png",
        "detection_by_concealment.png",
        "worst_cases.png",
    ):
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200, name
        assert image.std() > 5, f"{name} is blank"


def _with_thresholds(model: Path, tmp_path: Path, value: float) -> Path:
    """A copy of the model whose card sets every category's threshold to `value`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / model.name
    shutil.copy(model, copy)
    card = json.loads(model.with_suffix(".json").read_text())
    card["thresholds"] = {c: value for c in card["categories"]}
    copy.with_suffix(".json").write_text(json.dumps(card))
    return copy


def test_clean_scan_alarm_share_follows_the_card_thresholds(setup, tmp_path: Path):
    model, data = setup
    coco = json.loads((data / "annotations.json").read_text())
    clean = tmp_path / "clean"
    clean.mkdir()
    for im in coco["images"]:
        if im["clean"]:
            shutil.copy(data / im["file_name"], clean / Path(im["file_name"]).name)
            shutil.copy(data / im["low_file_name"], clean / Path(im["low_file_name"]).name)
    strict = _with_thresholds(model, tmp_path / "strict", 1.0)
    loose = _with_thresholds(model, tmp_path / "loose", 0.0)
    none = clean_scan_alarms(strict, clean, tmp_path / "o1", progress=False)
    every = clean_scan_alarms(loose, clean, tmp_path / "o2", progress=False)
    assert none["scans"] == every["scans"] == 2  # high/low pairs count once
    assert none["alarmed"] == 0 and none["alarm_share"] == 0.0
    assert every["alarmed"] == 2 and every["alarm_share"] == 1.0
    assert all(r["findings"] for r in every["per_scan"])
    assert cv2.imread(str(tmp_path / "o2" / "clean_alarms.png")) is not None


def test_eight_bit_clean_scans_alarm_at_the_eight_bit_thresholds(setup, tmp_path: Path):
    # One clean scan as an 8-bit JPEG beside its 16-bit pair: only the JPEG is
    # judged by the 8-bit thresholds, which here let anything alarm.
    model, data = setup
    coco = json.loads((data / "annotations.json").read_text())
    image = next(im for im in coco["images"] if im["clean"])
    folder = tmp_path / "clean"
    folder.mkdir()
    for key in ("file_name", "low_file_name"):
        shutil.copy(data / image[key], folder / Path(image[key]).name)
    scan = load_scan(data / image["file_name"])
    export8 = eight_bit_export(scan, np.random.default_rng(0))
    cv2.imwrite(str(folder / "export.jpg"), export8.high)
    copy = _with_thresholds(model, tmp_path / "m", 1.0)
    card = json.loads(copy.with_suffix(".json").read_text())
    card["thresholds_8bit"] = dict.fromkeys(card["categories"], 0.0)
    copy.with_suffix(".json").write_text(json.dumps(card))
    result = clean_scan_alarms(copy, folder, tmp_path / "o", progress=False)
    by_file = {r["file"]: r["alarm"] for r in result["per_scan"]}
    assert by_file == {"export.jpg": True, Path(image["file_name"]).name: False}
    assert set(result["thresholds_used"]) == {"8-bit", "16-bit"}


def test_clean_scan_alarms_need_a_calibrated_card(setup, tmp_path: Path):
    model, data = setup
    with pytest.raises(ModelError, match="no thresholds"):
        clean_scan_alarms(model, data / "images", tmp_path, progress=False)


@pytest.mark.slow
def test_test_figures_can_be_recorded_in_the_card_without_touching_the_model(setup, tmp_path: Path):
    model, data = setup
    copy = _with_thresholds(model, tmp_path / "m", 0.5)
    before = copy.read_bytes()
    args = ["evaluate", "--model", str(copy), "--data", str(data), "--out", str(tmp_path / "e")]
    assert main([*args, "--no-pictures", "--record-in-card", "--single-energy"]) == 0
    card = json.loads(copy.with_suffix(".json").read_text())
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    recorded = card["metrics"]["test_single_energy"]
    assert recorded["map50"] == metrics["map50"] and recorded["scan"] == metrics["scan"]
    assert recorded["by_attenuation"] == metrics["by_attenuation"]["all"]
    assert recorded["verdicts"] == metrics["verdicts"]
    # Under a key of one's own (e.g. threats projected into real scans) ...
    assert main([*args, "--no-pictures", "--record-in-card", "--record-as", "projected"]) == 0
    card = json.loads(copy.with_suffix(".json").read_text())
    both = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert card["metrics"]["projected"]["scan"] == both["scan"]
    assert card["metrics"]["test_single_energy"] == recorded  # kept beside it
    # ... and a clean-scan check's figures.
    clean = ["evaluate", "--model", str(copy), "--clean-scans", str(data / "images"),
             "--out", str(tmp_path / "c"), "--no-pictures", "--record-in-card"]  # fmt: skip
    assert main(clean) == 0
    card = json.loads(copy.with_suffix(".json").read_text())
    result = json.loads((tmp_path / "c" / "clean_alarms.json").read_text())
    got = card["metrics"]["clean_scans"]
    assert got["scans"] == result["scans"] == 6 and got["data"] == str(data / "images")
    assert got["alarm_or_review_share"] == result["alarm_or_review_share"]
    assert "per_scan" not in got
    assert copy.read_bytes() == before
    from inference.engine import Engine

    Engine.load(copy)  # the card still matches the ONNX bytes


def test_box_attenuation_is_the_median_attenuation_inside_each_box(setup):
    _, data = setup
    coco = json.loads((data / "annotations.json").read_text())
    image = next(im for im in coco["images"] if not im["clean"])
    scan = load_scan(data / image["file_name"])
    a = attenuation(scan.high)
    x, y, w, h = next(an["bbox"] for an in coco["annotations"] if an["image_id"] == image["id"])
    boxes = np.array([[x, y, x + w, y + h], [0, 0, 4, 4], [-10, -10, 3, 2]], np.float64)
    got = box_attenuation(scan.high, boxes)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = int(np.ceil(x + w)), int(np.ceil(y + h))
    assert got[0] == pytest.approx(float(np.median(a[y0:y1, x0:x1])))
    assert got[1] == pytest.approx(float(np.median(a[0:4, 0:4])))
    assert got[2] == pytest.approx(float(np.median(a[0:2, 0:3])))  # clipped to the scan
    assert got[0] > got[1]  # a threat crosses more matter than the air in a corner
    assert box_attenuation(scan.high, np.zeros((0, 4))).shape == (0,)


@pytest.mark.slow
def test_a_clean_only_set_read_beside_a_test_set_sets_the_thresholds_of_both(setup, tmp_path: Path):
    # With n clean scans the 1 % threshold is the floor(0.01 n)-th highest clean score, so
    # a clean-only set is added to a test set rather than regenerating both; evaluation
    # and calibration must then read the two as one.
    model, data = setup
    clean = tmp_path / "clean"
    write_dataset(clean, count=3, seed=52, workers=1, progress=False,
                  config=SynthConfig(clean_fraction=1.0))  # fmt: skip
    one = evaluate(model, data, tmp_path / "one", pictures=False, progress=False)
    copy = _with_thresholds(model, tmp_path / "m", 0.5)
    args = ["evaluate", "--model", str(copy), "--data", str(data), "--data", str(clean)]
    assert main([*args, "--out", str(tmp_path / "both"), "--no-pictures", "--record-in-card"]) == 0
    both = json.loads((tmp_path / "both" / "metrics.json").read_text())
    assert both["clean_scans"] == one["clean_scans"] + 3
    assert both["threat_instances"] == one["threat_instances"] > 0
    engine = Engine.load(model)
    extra = [engine.analyze(load_scan(clean / im["file_name"], clean / im["low_file_name"]))
             for im in json.loads((clean / "annotations.json").read_text())["images"]]  # fmt: skip
    for name, cat in both["categories"].items():
        clean_max = max(
            (f.score for a in extra for f in a.findings if f.category == name), default=0
        )
        # Under 100 clean scans, 1 % allows none above: the threshold is the highest clean score.
        expected = max(one["categories"][name]["threshold_at_far"]["0.01"], clean_max)
        assert cat["threshold_at_far"]["0.01"] == pytest.approx(expected, abs=1e-6)
        rate = cat["detection_rate_at_far"]["0.01"]
        assert rate is None or rate <= one["categories"][name]["detection_rate_at_far"]["0.01"]
    assert json.loads(copy.with_suffix(".json").read_text())["metrics"]["test"]["data"] == [
        str(data), str(clean)
    ]  # fmt: skip
    # Calibration on the same two sets, through the same engine, gives the same thresholds.
    assert main(["calibrate", "--model", str(copy), "--val", str(data), "--val", str(clean)]) == 0
    card = json.loads(copy.with_suffix(".json").read_text())
    assert card["calibration"]["data"] == [str(data), str(clean)]
    for name, cat in both["categories"].items():
        assert card["thresholds"][name] == pytest.approx(cat["threshold_at_far"]["0.01"], abs=1e-6)


def test_evaluate_measures_contents_verification_when_the_set_has_the_cargo_truth(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    model, data = setup
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out",
                 str(tmp_path), "--no-pictures"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    cargo = json.loads((tmp_path / "metrics.json").read_text())["cargo"]
    images = json.loads((data / "annotations.json").read_text())["images"]
    assert cargo["scans"] == len(images) == 6
    assert cargo["containers"]["n"] == sum(len(im["containers"]) for im in images)
    assert cargo["containers"]["iou_median"] > 0.85
    hidden = [sum(c["hidden_kg"] for c in im["containers"]) for im in images]
    consistent = sum(
        im["manifest_discrepancy"] is None and h == 0 for im, h in zip(images, hidden, strict=True)
    )
    assert cargo["manifest"]["consistent_scans"] == consistent
    hiding = sum(
        im["manifest_discrepancy"] is None and h > 0 for im, h in zip(images, hidden, strict=True)
    )
    assert cargo["manifest"]["hidden_goods"]["scans"] == hiding
    assert set(cargo["manifest"]["kinds"]) == {
        "declared_empty_but_loaded", "declared_loaded_but_empty", "undeclared_goods",
        "false_description", "weight_mismatch",
    }  # fmt: skip
    assert cargo["mass_error"]["all"]["n"] >= 1 and cargo["cargo_ms_median"] > 0
    assert "cargo: consistent scans flagged" in printed and "cargo: mass error" in printed


@pytest.mark.slow
def test_an_acv_set_measures_every_discrepancy_kind(setup, tmp_path: Path):
    model, _ = setup
    data = tmp_path / "acv"
    # The first 8 scans of the acv mix: 2 consistent empty, 1 consistent loaded, each kind.
    write_dataset(data, count=8, seed=52, workers=1, progress=False,
                  config=SynthConfig(manifest_mix="acv"))  # fmt: skip
    metrics = evaluate(model, data, tmp_path / "out", pictures=False, progress=False)
    kinds = metrics["cargo"]["manifest"]["kinds"]
    assert all(k["scans"] == 1 for k in kinds.values())
    man = metrics["cargo"]["manifest"]
    assert man["consistent_scans"] + man["hidden_goods"]["scans"] == 3
    assert metrics["cargo"]["empty_loaded"]["n_empty"] >= 2
    # The kinds contents verification tells surely (docs/cargo.md), at the shipped thresholds.
    assert kinds["declared_empty_but_loaded"]["detection_rate_at_shipped"] == 1.0
    assert kinds["declared_loaded_but_empty"]["detection_rate_at_shipped"] == 1.0


def test_identical_clean_copies_count_once_and_the_resolution_is_said(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A clean scan read twice (the same set given twice, as a `tip` set repeats a
    background's clean re-encoding) is one distinct image: 1 % false alarms over a few
    distinct images is a zero-false-alarm point, and evaluate says so."""
    model, data = setup
    one = evaluate(model, data, tmp_path / "one", pictures=False, progress=False)
    assert one["clean_distinct_scans"] == one["clean_scans"] >= 1
    out = tmp_path / "twice"
    args = ["evaluate", "--model", str(model), "--data", str(data), "--data", str(data)]
    assert main([*args, "--out", str(out), "--no-pictures"]) == 0
    twice = json.loads((out / "metrics.json").read_text())
    assert twice["clean_scans"] == 2 * one["clean_scans"]
    assert twice["clean_distinct_scans"] == one["clean_distinct_scans"]
    printed = capsys.readouterr().out
    line = f"clean scans: {twice['clean_scans']}, {twice['clean_distinct_scans']} distinct"
    assert line in printed and "1 % and 0.1 %" in printed
    assert resolution_line({"clean_scans": 500, "clean_distinct_scans": 500}, (0.01,)) is None
    assert "0.1 %" in resolution_line({"clean_scans": 500, "clean_distinct_scans": 500})
