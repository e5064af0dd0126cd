"""The second stage: crops, training on the detector's own candidates, the card, and the
engine scoring 8-bit candidates with it (the same probabilities as the trained network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cargoscan.cli import main
from inference import DEFAULT_MODEL
from inference.engine import Engine, ModelError
from inference.preprocess import attenuation
from inference.result import build_result, result_model
from inference.scan import load_scan
from inference.verifier import CLOSE, CROP, WIDE, crops, features
from training.augment import Augment
from training.synth.scene import SynthConfig, generate_scan
from training.tip import write_tip_dataset
from training.verifier import FLOOR, VerifierEnsemble, VerifierNet


def test_crops_are_square_context_around_the_box_and_zero_outside_the_scan():
    tensor = np.zeros((1, 2, 128, 256), np.float32)
    tensor[0, :, :100, :200] = 1.0  # the scan; the rest is padding
    tensor[0, 1, :100, :200] = 2.0
    inside, corner = crops(tensor, np.array([[90, 40, 110, 60], [0, 0, 8, 8]]), (100, 200))
    assert inside.shape == corner.shape == (2, CROP, CROP)
    np.testing.assert_allclose(inside[0], 1.0)  # 2.5 x 20 = 50 px, all inside the scan
    np.testing.assert_allclose(inside[1], 2.0)
    # A speck gets 48 px of context, centred on it: three quarters fall off the scan.
    assert corner[0, :20, :20].max() == 0.0 and corner[0, -20:, -20:].min() == 1.0
    f = features(np.array([0.5]), np.array([[0.0, 0.0, 10.0, 20.0]]), np.array([3]), 5)
    np.testing.assert_allclose(f, [[0.5, np.log(10), np.log(20), 0, 0, 0, 1, 0]], rtol=1e-6)


def test_a_wide_view_shows_the_repeats_around_a_candidate():
    """Blocks every 60 px along a row, as chassis parts under a trailer floor: the close
    view of one shows one block, the wide view (second pair of channels) shows its
    neighbours, so the two views of a lone block and of a repeated one differ."""
    tensor = np.zeros((1, 2, 256, 1024), np.float32)
    for x in range(100, 1000, 60):
        tensor[0, :, 120:140, x : x + 20] = 1.0
    lone = tensor.copy()
    lone[0, :, 120:140, :] = 0.0
    lone[0, :, 120:140, 520:540] = 1.0
    box = np.array([[520, 120, 540, 140]])
    repeated = crops(tensor, box, (256, 1024), (CLOSE, WIDE))[0]
    single = crops(lone, box, (256, 1024), (CLOSE, WIDE))[0]
    assert repeated.shape == (4, CROP, CROP)
    np.testing.assert_allclose(repeated[:2], single[:2])  # 50 px: the block alone
    # 160 px: a neighbour each side
    assert repeated[2:].sum() == pytest.approx(3 * single[2:].sum())
    np.testing.assert_allclose(repeated[:2], crops(tensor, box, (256, 1024))[0])


@pytest.fixture(scope="module")
def tip_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Threats projected into two synthetic trucks exported as 8-bit JPEGs."""
    root = tmp_path_factory.mktemp("verifier")
    backgrounds = root / "backgrounds"
    backgrounds.mkdir()
    for i in (0, 1):
        scan = generate_scan(i, 5, SynthConfig(pitch_mm=10.0))
        counts, _ = Augment(tone_power_p=0.0).eight_bit_counts(
            attenuation(scan.high), np.random.default_rng(i)
        )
        cv2.imwrite(str(backgrounds / f"scan{i}.jpg"), counts, [cv2.IMWRITE_JPEG_QUALITY, 85])
    out = root / "tip"
    write_tip_dataset(backgrounds, out, count=24, seed=3, workers=1, progress=False)
    return out


@pytest.mark.slow
def test_trained_on_candidates_attached_and_used_by_the_engine(tip_set: Path, tmp_path: Path):
    model = tmp_path / "m.onnx"
    shutil.copy(DEFAULT_MODEL, model)
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    run = tmp_path / "run"
    args = ["verifier", "--model", str(model), "--data", str(tip_set), "--out", str(run)]
    more = ["--epochs", "2", "--val-share", "0.5", "--members", "2", "--wide-view"]
    assert main([*args, *more]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    spec = card["verifier"]
    assert spec["file"] == "m.verifier.onnx" and spec["bit_depths"] == [8]
    assert spec["floor"] == FLOOR and spec["members"] == 2
    assert spec["views"] == [list(CLOSE), list(WIDE)]
    assert [len(h) for h in spec["history"]] == [2, 2]
    assert all(e in (1, 2) for e in spec["epochs"]) and (run / "verifier.pt").is_file()

    verified = Engine.load(model)
    detector = Engine.load(model)
    detector.verifier = None
    assert verified.verifier is not None
    scan = load_scan(sorted((tip_set / "images").glob("*.jpg"))[0])
    assert scan.bit_depth == 8
    alone = detector.analyze(scan)
    got = verified.analyze(scan)
    # Results name the verifier that scored them; a card without one names none.
    assert build_result(verified, got, "s", 0.0)["model"]["verifier_sha256"] == spec["sha256"]
    plain = {k: v for k, v in card.items() if k != "verifier"}
    assert result_model(plain).verifier_sha256 is None
    # Every candidate from the floor up, scored by the trained network itself.
    candidates = [f for f in alone.findings if f.score >= FLOOR]
    assert candidates, "the default model finds something in a projected scan"
    members = [VerifierNet(3 + len(verified.categories), channels=4) for _ in range(2)]
    net = VerifierEnsemble(members)
    net.load_state_dict(torch.load(run / "verifier.pt"))
    net.eval()
    # The two members differ (seeds), and the shipped network is their average.
    one = members[0].state_dict()["body.0.0.weight"]
    assert not torch.equal(one, members[1].state_dict()["body.0.0.weight"])
    boxes = np.array([f.box for f in candidates])
    mi = alone.model_input
    labels = [verified.categories.index(f.category) for f in candidates]
    scores = np.array([f.score for f in candidates])
    with torch.no_grad():
        want = torch.sigmoid(
            net(
                torch.from_numpy(crops(mi.tensor, mi.to_model(boxes), mi.scaled_hw, (CLOSE, WIDE))),
                torch.from_numpy(features(scores, boxes, labels, 5)),
            )
        ).numpy()
    expected = sorted(
        ((f.category, f.box, float(p)) for f, p in zip(candidates, want, strict=True) if p >= 0.05),
        key=lambda t: -t[2],
    )
    assert [(f.category, f.box) for f in got.findings] == [(c, b) for c, b, _ in expected]
    np.testing.assert_allclose(
        [f.score for f in got.findings], [p for *_, p in expected], atol=1e-5
    )
    # A 16-bit scan is not what it was trained on: the detector's findings as they were.
    sixteen = generate_scan(0, 9, SynthConfig(pitch_mm=10.0))
    from inference.scan import Scan

    dual = Scan(high=sixteen.high, low=sixteen.low)
    assert [f.score for f in verified.analyze(dual).findings] == [
        f.score for f in detector.analyze(dual).findings
    ]

    # The card's verifier is checked: gone, or other bytes, and the model is refused.
    verifier = model.with_suffix(".verifier.onnx")
    data = verifier.read_bytes()
    verifier.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelError, match="does not match the card"):
        Engine.load(model)
    verifier.unlink()
    with pytest.raises(ModelError, match=r"missing .*verifier"):
        Engine.load(model)


def test_a_folder_that_is_not_a_labelled_set_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = ["verifier", "--model", str(DEFAULT_MODEL), "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2  # a usage error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no annotations.json" in err[0]
    assert not (tmp_path / "run").exists()


def test_no_members_is_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["verifier", "--model", str(DEFAULT_MODEL), "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "run"), "--members", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--members must be at least 1" in err[0]
    assert not (tmp_path / "run").exists()
