"""tools/train_gpu.py (`make train-gpu`): the GPU-slot pipeline runs end to end on a CPU
with tiny sizes, so it is known to work before a GPU is there.

The "real" scans are synthetic ones at 20 mm pitch written as 8-bit JPEG exports, one
folder per scan as in ../shared/real-cargo/ajna_bbox; their names are picked so that the
hash rule puts three in the training share and two in the held-out one.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference import DEFAULT_MODEL
from inference.engine import Engine
from inference.preprocess import attenuation
from tools.train_gpu import TRAIN_SHARE, main, real_share, split_real_scans
from training.augment import Augment
from training.synth.scene import SynthConfig, generate_scan

TRAIN_IDS, HELD_IDS = ("scan-00", "scan-01", "scan-03"), ("scan-02", "scan-06")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    for i, scan_id in enumerate(TRAIN_IDS + HELD_IDS):
        scan = generate_scan(i, 41, SynthConfig(pitch_mm=20.0, clean_fraction=1.0))
        counts, _ = Augment(tone_power_p=0.0).eight_bit_counts(
            attenuation(scan.high), np.random.default_rng(i)
        )
        (root / scan_id).mkdir()
        cv2.imwrite(str(root / scan_id / f"{scan_id}.jpg"), counts, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (root / scan_id / f"{scan_id}.txt").write_text("0 0.5 0.5 0.9 0.9\n")
    (root / "LICENSE").write_text("Example Scans Licence 1.0\n")
    return root


def test_the_split_follows_the_documented_hash_rule(real: Path, tmp_path: Path):
    # docs/real-scans.md: the first 8 hex digits of the id's SHA-256 over 16^8, below 0.6.
    assert real_share("scan-00") == pytest.approx(0x62CF096F / 16**8)
    assert all(real_share(i) < TRAIN_SHARE for i in TRAIN_IDS)
    assert all(real_share(i) >= TRAIN_SHARE for i in HELD_IDS)
    counts = split_real_scans(real, tmp_path / "train", tmp_path / "held")
    assert counts == {"train": 3, "held": 2}
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["LICENSE", *TRAIN_IDS]
    assert (tmp_path / "held" / "scan-06" / "scan-06.jpg").is_symlink()


@pytest.mark.slow  # 1-2 minutes on the 2-core machine beside a training job
def test_a_tiny_run_writes_a_loadable_model_its_card_metrics_and_summary(real: Path, tmp_path):
    out = tmp_path / "gpu"
    argv = [
        "--out", str(out), "--minutes", "0.05", "--real", str(real),
        "--batch", "2", "--crop", "64", "--steps", "2", "--max-rounds", "2",
        "--chunk", "3", "--max-train-scans", "6", "--val-count", "3", "--calib-count", "3",
        "--test-count", "3", "--held-count", "4", "--pitch", "20", "--workers", "1",
        "--hard-negative-share", "0.5", "--hard-negative-scans", "2", "--alarm-rate", "0.5",
        "--review-rate", "0.5", "--no-pictures", "--precision", "fp32",
    ]  # fmt: skip
    assert main(argv) == 0
    model = out / "model" / "cargoscan-gpu.onnx"
    engine = Engine.load(model)
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["thresholds"] and card["calibration"]["commissioned"]["cleared_scans"]
    assert {"test", "test_projected_real", "clean_scans"} <= set(card["metrics"])
    assert engine.card.name == "cargoscan-gpu"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["real_split"] == {"train": 3, "held": 2}
    # Started from the shipped model: its own figures, from its card, stand beside.
    assert metrics["init"] == str(DEFAULT_MODEL)
    assert isinstance(metrics["init_figures"]["synthetic_test"]["map50"], float)
    assert set(metrics["result"]["evaluation"]) == {
        "synthetic_test",
        "projected_real",
        "clean_real",
    }
    assert metrics["result"]["evaluation"]["clean_real"]["scans"] == 2  # the held-out share
    rounds = metrics["training"]["rounds"]
    assert 1 <= len(rounds) <= 2 and all(r["steps"] >= 1 for r in rounds)
    # Held-out scans feed no training data: every projection's background is a training one.
    for chunk in metrics["training"]["chunks"]:
        info = json.loads((Path(chunk) / "annotations.json").read_text())
        used = {im["tip"]["background"].split("/")[0] for im in info["images"] if "tip" in im}
        assert not used & set(HELD_IDS)
    assert (out / "eval" / "projected_real" / "metrics.json").is_file()
    assert (out / "eval" / "clean_real" / "clean_alarms.json").is_file()
    assert "| synthetic_test: map50 |" in (out / "summary.md").read_text()
