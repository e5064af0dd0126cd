"""Hard negatives: false findings mined on whole scans, pooled, and cropped around in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cargoscan.cli import main
from inference import DEFAULT_MODEL
from inference.boxes import hits
from training.augment import Augment
from training.data import Sample, open_source
from training.hard_negatives import (
    HardNegativePool,
    false_findings,
    onnx_findings,
    scans_to_mine,
    whole_scan_findings,
)
from training.model import ExportWrapper
from training.synth.dataset import write_dataset
from training.train import TrainConfig, _hard_negative_draws, load_checkpoint, train
from training.warm_start import config_of


def test_false_findings_keep_the_strongest_regions_off_every_threat():
    gt = np.array([[100, 100, 200, 200]], np.float32)
    boxes = np.array(
        [
            [110, 110, 190, 190],  # on the threat (any category): not a false finding
            [400, 100, 460, 160],  # strongest false finding
            [405, 105, 465, 165],  # the same region again, weaker: dropped
            [600, 100, 640, 140],
            [800, 100, 840, 140],
            [900, 100, 940, 140],  # under the minimum score
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.7, 0.6, 0.5, 0.3, 0.05])
    labels = np.array([1, 3, 3, 0, 1, 2])
    found = false_findings(boxes, scores, labels, gt, min_score=0.1, per_scan=5)
    assert [(c, s) for _, c, s in found] == [(3, 0.7), (0, 0.5), (1, 0.3)]
    assert np.array_equal(found[0][0], boxes[1])
    capped = false_findings(boxes, scores, labels, gt, min_score=0.1, per_scan=2)
    assert [s for _, _, s in capped] == [0.7, 0.5]
    # A clean scan: every finding over the minimum may be a false one.
    clean = false_findings(boxes, scores, labels, np.zeros((0, 4)), min_score=0.1, per_scan=9)
    assert [s for _, _, s in clean] == [0.9, 0.7, 0.5, 0.3]


def test_pool_replaces_a_scans_regions_draws_by_score_and_survives_a_checkpoint(tmp_path: Path):
    pool = HardNegativePool.empty()
    weak = (np.array([0, 0, 10, 10], np.float32), 1, 0.2)
    strong = (np.array([50, 50, 70, 70], np.float32), 3, 0.6)
    pool.update(4, [weak])
    pool.update(9, [strong])
    pool.update(7, [weak])
    pool.update(7, [])  # mined again, nothing found: the scan leaves the pool
    assert sorted(pool.regions) == [4, 9] and len(pool) == 2
    indices, boxes = pool.draw(4000, np.random.default_rng(0))
    share_strong = float(np.mean(indices == 9))
    assert 0.72 < share_strong < 0.78  # 0.6 / (0.6 + 0.2)
    assert np.array_equal(boxes[indices == 9][0], strong[0])
    summary = pool.summary(["firearm", "narcotics", "cigarettes", "currency", "person"])
    assert summary["regions"] == 2 and summary["by_category"]["currency"] == 1
    assert summary["max_score"] == pytest.approx(0.6)

    torch.save({"hard_negatives": pool.state()}, tmp_path / "ck.pt")
    back = HardNegativePool.from_state(
        torch.load(tmp_path / "ck.pt", weights_only=True)["hard_negatives"]
    )
    assert sorted(back.regions) == [4, 9]
    box, category, score = back.regions[9][0]
    assert np.array_equal(box, strong[0]) and category == 3 and score == pytest.approx(0.6)
    assert len(HardNegativePool.from_state(HardNegativePool.empty().state())) == 0


def test_every_scan_is_mined_once_before_any_is_mined_again():
    first = np.concatenate([scans_to_mine(10, 4, e, seed=1) for e in range(2)])
    assert len(set(first.tolist())) == 8
    cycle = np.concatenate([scans_to_mine(10, 5, e, seed=1) for e in range(2)])
    assert sorted(cycle.tolist()) == list(range(10))
    assert len(scans_to_mine(3, 300, 0, seed=1)) == 3


def test_a_focus_region_is_what_the_crop_is_cut_around():
    # A clean scan with one bright square far from the threat: the crop must show it.
    image = np.zeros((2, 400, 3000), np.float32)
    image[:, 200:230, 2500:2530] = 5.0
    threat = np.array([[100, 100, 140, 140]], np.float32)
    s = Sample(image, threat, np.array([1]), True, "toy")
    # No 8-bit exports: they saturate the square at ln 256 (and which seeds draw one
    # changed when albumentations took over: it draws nothing for a p of 0).
    augment = Augment(
        crop_hw=(256, 256), object_crop_p=1.0, noise_p=0, row_gain_sigma=0, drop_low_p=0
    )
    focus = np.array([2500, 200, 2530, 230], np.float32)
    for k in range(20):
        rng = np.random.default_rng(k)
        cut = augment(Sample(**{**s.__dict__, "focus": focus}), rng)
        assert cut.image.max() > 4.0, "the focus region is in the crop"
        assert len(cut.boxes) == 0, "the threat 2,000 px away is not"
        assert cut.focus is None
        ordinary = augment(s, np.random.default_rng(k))
        assert len(ordinary.boxes) == 1  # without a focus, object crops find the threat


def test_a_share_of_the_epochs_draws_is_cut_around_pool_regions():
    pool = HardNegativePool.empty()
    pool.update(5, [(np.array([10, 20, 30, 40], np.float32), 0, 0.5)])
    cfg = TrainConfig(data=[], out="", hard_negative_share=0.3)
    draws = np.arange(100, 2100)
    before = draws.copy()
    focus, crops = _hard_negative_draws(draws, pool, cfg, epoch=2)
    marked = np.isfinite(focus).all(axis=1)
    assert crops == marked.sum() and 500 < crops < 700
    assert np.all(draws[marked] == 5) and np.all(focus[marked] == [10, 20, 30, 40])
    assert np.array_equal(draws[~marked], before[~marked])
    assert _hard_negative_draws(draws, HardNegativePool.empty(), cfg, 2) == (None, 0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hard_negative_data")
    write_dataset(out, count=4, seed=33, workers=1, progress=False)
    return out


@pytest.mark.slow
def test_training_mines_the_models_own_false_findings_and_keeps_them_on_resume(
    synth: Path, tmp_path: Path
):
    # The shipped model as the start: its findings on these whole scans are real ones.
    cfg = TrainConfig(
        data=[str(synth)],
        out=str(tmp_path / "run"),
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        crop=128,
        init=str(DEFAULT_MODEL),
        hard_negative_share=0.5,
        hard_negative_scans=3,
        hard_negative_min_score=0.05,
    )
    run = train(cfg, progress=False)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    mined = record["hard_negatives"]
    assert mined["mined_scans"] == 3
    assert mined["pool"]["regions"] > 0 and mined["crops"] > 0
    assert mined["pool"]["max_score"] >= 0.05
    last = torch.load(run / "last.pt", weights_only=True)
    pool = HardNegativePool.from_state(last["hard_negatives"])
    assert len(pool) == mined["pool"]["regions"]
    scans = open_source(synth, list(config_of(DEFAULT_MODEL).categories))
    for index, regions in pool.regions.items():
        boxes = np.stack([box for box, _, _ in regions])
        gt = scans[index].boxes  # in the model's pixels, as mining saw them
        if len(gt):  # none of them lies on a labelled threat
            assert not hits(boxes, gt).any()

    # Mining ran the ONNX export in ONNX Runtime: its findings are torch's.
    net, _ = load_checkpoint(run / "last.pt")
    wrapped = ExportWrapper(net)
    # The scan the model finds most on (which one depends on the shipped model).
    found = [whole_scan_findings(wrapped, s.image, torch.device("cpu")) for s in scans]
    best = max(range(len(scans)), key=lambda i: found[i][1].max(initial=0.0))
    boxes, scores, labels = found[best]
    ort_boxes, ort_scores, ort_labels = onnx_findings(net)(scans[best].image)
    strong = scores > 0.05
    assert strong.any()
    assert np.allclose(ort_scores[strong], scores[strong], atol=1e-4)
    assert np.array_equal(ort_labels[strong], labels[strong])
    assert np.allclose(ort_boxes[strong], boxes[strong], atol=0.05)

    # Resumed, the pool comes back from the checkpoint: the scan mined before
    # epoch 1 only keeps its regions; the three mined again get their own anew.
    cfg.epochs = 2
    train(cfg, resume=True, progress=False)
    second = json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    assert second["hard_negatives"]["mined_scans"] == 3
    remined = set(scans_to_mine(4, 3, 1, cfg.seed).tolist())
    kept = set(pool.regions) - remined
    assert len(remined) == 3 and kept, "one scan mined in epoch 1 is not mined in epoch 2"
    after = HardNegativePool.from_state(
        torch.load(run / "last.pt", weights_only=True)["hard_negatives"]
    )
    for index in kept:
        assert [s for _, _, s in after.regions[index]] == [s for _, _, s in pool.regions[index]]


@pytest.mark.parametrize(("flag", "value"), [("--hard-negative-share", "1.0"),
                                             ("--hard-negative-share", "-0.2"),
                                             ("--hard-negative-scans", "0"),
                                             ("--hard-negative-min-score", "1.5")])  # fmt: skip
def test_train_refuses_hard_negative_settings_it_cannot_use(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
):
    out = tmp_path / "r"
    args = ["train", "--data", str(synth), "--out", str(out), "--epochs", "1", "--crop", "128"]
    assert main([*args, flag, value]) == 2
    assert "hard-negative" in capsys.readouterr().err
    assert not out.exists()
