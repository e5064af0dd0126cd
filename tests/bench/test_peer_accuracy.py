"""bench/peer_accuracy.py (issue 30): the scans as the peer's tiles and labels, the tiled
ONNX adapter's stitching on a real export, and the whole benchmark end to end on tiny data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench.peer.adapter import TiledYolo, cores, starts
from bench.peer.tiles import A_MAX, RATIO_HI, RATIO_LO, rgb8, write_yolo_set, yolo_rows
from inference.preprocess import ATTENUATION_SCALE
from inference.scan import Scan
from training.data import MixedScans, open_source
from training.model import ModelConfig
from training.synth.dataset import write_dataset

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = list(ModelConfig().categories)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("peer_scans")
    write_dataset(out, count=2, seed=61, workers=1, progress=False)
    return out


def test_the_window_maps_attenuation_and_ratio_to_eight_bits():
    a_high = np.array([[0.0, A_MAX / 2, A_MAX, 2 * A_MAX, 2.0]], np.float32)
    a_low = np.array([[0.0, A_MAX / 2, A_MAX, 2 * A_MAX, 2.0 * RATIO_HI]], np.float32)
    channels = np.stack([a_high, a_low]) / ATTENUATION_SCALE
    dual = rgb8(channels, has_low=True)
    assert dual.dtype == np.uint8 and dual.shape == (1, 5, 3)
    assert dual[0, :, 0].tolist() == [0, 128, 255, 255, 51]  # red: a_high over [0, A_MAX]
    assert dual[0, :, 1].tolist() == [0, 128, 255, 255, 71]  # green: a_low, the same window
    # blue: the ratio over [RATIO_LO, RATIO_HI]; 0 in air, where it is noise.
    assert dual[0, 0, 2] == 0
    assert dual[0, 1, 2] == round((1.0 - RATIO_LO) / (RATIO_HI - RATIO_LO) * 255)
    assert dual[0, 4, 2] == 255
    single = rgb8(channels, has_low=False)
    assert (single == single[..., :1]).all() and (single[..., 0] == dual[..., 0]).all()


def test_yolo_rows_are_normalised_and_clipped_to_the_tile():
    boxes = np.array([[10, 20, 30, 60], [-10, 0, 20, 10], [90, 90, 130, 95], [200, 0, 210, 5]])
    rows = yolo_rows(boxes, np.array([1, 0, 4, 2]), 100, 100)
    parsed = [[float(v) for v in r.split()] for r in rows]
    assert parsed[0] == pytest.approx([1, 0.2, 0.4, 0.2, 0.4])
    assert parsed[1] == pytest.approx([0, 0.1, 0.05, 0.2, 0.1])  # clipped at the left edge
    assert parsed[2] == pytest.approx([4, 0.95, 0.925, 0.1, 0.05])
    assert len(rows) == 3  # the box outside the tile is dropped


def test_tiles_are_cut_from_the_scan_at_full_resolution_with_their_labels(
    scans: Path, tmp_path: Path
):
    source = MixedScans([(open_source(scans, CATEGORIES, cache=True), 1.0)])
    # As the benchmark does: every scan cached first, so all tiles come from the cache's
    # float16 (a scan's first read is float32, and may differ in the last grey level).
    for k in range(len(source)):
        source[k]
    pictures = [rgb8(source[k].image, source[k].has_low) for k in range(len(source))]
    crop = 256
    yaml = write_yolo_set(source, source, tmp_path / "set", tiles=8, val_tiles=2, crop=crop,
                          seed=3, progress=False)  # fmt: skip
    text = yaml.read_text()
    assert "train: images/train" in text and "val: images/val" in text
    assert f"nc: {len(CATEGORIES)}" in text and "  4: person" in text
    summary = json.loads((tmp_path / "set" / "tiles.json").read_text())
    assert summary["train"]["tiles"] == 8 and summary["val"]["tiles"] == 2
    empty, labelled = 0, 0
    for k in range(8):
        tile = cv2.cvtColor(
            cv2.imread(str(tmp_path / "set/images/train" / f"{k:06d}.png")), cv2.COLOR_BGR2RGB
        )
        assert tile.shape == (crop, crop, 3)
        rows = (tmp_path / "set/labels/train" / f"{k:06d}.txt").read_text().split("\n")[:-1]
        empty += not rows
        # Where in which scan: the tile is an exact cut of the scan's own picture.
        (scan, x0, y0) = _locate(tile, pictures)
        assert (pictures[scan][y0 : y0 + crop, x0 : x0 + crop] == tile).all()
        gt = source.labelled(scan).boxes - np.array([x0, y0, x0, y0])
        for row in rows:
            _, cx, cy, w, h = (float(v) for v in row.split())
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * crop
            clipped = np.clip(gt, 0, crop)
            assert np.abs(clipped - box).max(axis=1).min() < 0.01, "a label no scan box gives"
            labelled += 1
    assert summary["train"]["tiles_without_threat"] == empty
    assert sum(summary["train"]["instances"].values()) == labelled > 0


def _locate(tile: np.ndarray, pictures: list[np.ndarray]) -> tuple[int, int, int]:
    """(scan, x0, y0) of the scan window the tile was cut from: its most textured 48 px
    patch found by template matching."""
    red = tile[..., 0].astype(np.float32)
    size = 48
    spots = [(y, x) for y in range(0, tile.shape[0] - size + 1, size)
             for x in range(0, tile.shape[1] - size + 1, size)]  # fmt: skip
    y, x = max(spots, key=lambda s: red[s[0] : s[0] + size, s[1] : s[1] + size].std())
    patch = red[y : y + size, x : x + size]
    best = None
    for n, picture in enumerate(pictures):
        found = cv2.matchTemplate(picture[..., 0].astype(np.float32), patch, cv2.TM_SQDIFF)
        low, _, (px, py), _ = cv2.minMaxLoc(found)
        if best is None or low < best[0]:
            best = (low, n, px - x, py - y)
    assert best is not None
    return best[1], best[2], best[3]


class _Toy(torch.nn.Module):
    """A YOLO-shaped detector that is easy to reason about: on an 8 px grid, class 0
    scores the mean red (high attenuation) of each cell, with a 16 px box centred on it;
    output (batch, 4 + 2 classes, anchors) in input pixels, like Ultralytics' export."""

    def __init__(self, tile: int) -> None:
        super().__init__()
        cells = tile // 8
        yy, xx = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("cx", (xx.reshape(-1).float() + 0.5) * 8)
        self.register_buffer("cy", (yy.reshape(-1).float() + 0.5) * 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.nn.functional.avg_pool2d(x[:, :1], 8).flatten(1)
        side = torch.full_like(score, 16.0)
        cx, cy = self.cx.expand_as(score), self.cy.expand_as(score)
        return torch.stack([cx, cy, side, side, score, torch.zeros_like(score)], dim=1)


def _toy_onnx(path: Path, tile: int) -> Path:
    torch.onnx.export(
        _Toy(tile), torch.zeros(2, 3, tile, tile), str(path), input_names=["images"],
        output_names=["output0"], opset_version=17, dynamic_axes={"images": {0: "b"}},
        dynamo=False,
    )  # fmt: skip
    return path


def _scan_with_squares(h: int, w: int, squares: list[tuple[int, int]]) -> Scan:
    """Air (60,000 counts) with 8 px squares dark enough to fill the window (a > A_MAX)."""
    counts = np.full((h, w), 60000, np.uint16)
    for x, y in squares:
        counts[y : y + 8, x : x + 8] = 2
    return Scan(high=counts)


def test_tile_origins_cover_the_axis_and_split_the_overlaps():
    assert starts(200, 64, 16) == [0, 48, 96, 136]
    assert starts(64, 64, 16) == [0] and starts(40, 64, 16) == [0]
    with pytest.raises(ValueError):
        starts(200, 64, 64)
    assert cores([0, 48, 96, 136], 64) == [(-np.inf, 56.0), (56.0, 104.0), (104.0, 148.0),
                                            (148.0, np.inf)]  # fmt: skip


def test_the_adapter_stitches_tiles_back_into_the_scan_once_per_object(tmp_path: Path):
    tile = 64
    detect = TiledYolo(_toy_onnx(tmp_path / "toy.onnx", tile), tile=tile, overlap=16, batch=3)
    # Inside one tile, in the overlap of two (seen by both), flush with the right and the
    # bottom edges (only the last tiles), and across the seam of two rows of tiles.
    squares = [(16, 16), (48, 8), (184, 24), (104, 56), (136, 32)]
    boxes, scores, labels = detect(_scan_with_squares(72, 200, squares))
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    expected = sorted((x + 4 - 8, y + 4 - 8, x + 4 + 8, y + 4 + 8) for x, y in squares)
    assert boxes[order] == pytest.approx(np.clip(np.array(expected, float), 0, [200, 72, 200, 72]))
    assert scores == pytest.approx(np.ones(len(squares)))
    assert (labels == 0).all()
    # A scan smaller than a tile is padded with air.
    boxes, scores, _ = detect(_scan_with_squares(48, 40, [(24, 32)]))
    assert boxes.tolist() == [[20.0, 28.0, 36.0, 44.0]] and scores == pytest.approx([1.0])
    # Nothing there, nothing found.
    boxes, scores, labels = detect(_scan_with_squares(72, 200, []))
    assert boxes.shape == (0, 4) and scores.shape == labels.shape == (0,)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="Ultralytics is the bench extra (pip install -e '.[training,bench]')",
)
def test_the_benchmark_runs_end_to_end_on_tiny_data(scans: Path, tmp_path: Path):
    val, test = tmp_path / "val", tmp_path / "test"
    write_dataset(val, count=3, seed=62, workers=1, progress=False)
    write_dataset(test, count=3, seed=63, workers=1, progress=False)
    clean = tmp_path / "clean"
    clean.mkdir()
    for p in (test / "images").glob("000002_*.png"):  # scan 2 of a synth set is clean
        (clean / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(ROOT / "bench/peer_accuracy.py"), "--data", str(scans),
        "--val", str(val), "--test", str(test), "--clean", str(clean), "--out", str(out),
        "--minutes", "1", "--tiles", "12", "--val-tiles", "2", "--steps", "3",
        "--yolo-batch", "4", "--batch", "4", "--crop", "256", "--curve-points", "2", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for name in ("CargoNet", "YOLOv8n"):
        run = report["models"][name]
        assert run["training"]["minutes"] == 1 and run["training"]["snapshots"] >= 1
        assert 1 <= len(run["curve"]) <= 2 and run["curve"][-1]["minutes"] > 0
        (figures,) = run["tests"]
        assert figures["scans"] == 3 and figures["clean_scans"] == 1
        assert figures["scan_detection_rate"] is None or 0 <= figures["scan_detection_rate"] <= 1
        assert 0 <= figures["map50"] <= 1 and set(figures["categories"]) == set(CATEGORIES)
        assert figures["ms_per_scan"]["median"] > 0
        assert run["clean"]["scans"] == 1 and 0 <= run["clean"]["alarm_share"] <= 1
        assert Path(run["onnx"]).is_file()
    assert report["peer_tiles"]["tiles"] == 12
    text = (out / "report.md").read_text()
    assert "| | CargoNet | YOLOv8n |" in text and "scan detection at 1 % false alarms" in text
    picture = cv2.imread(str(out / "curves.png"))
    assert picture is not None and picture.std() > 5
    assert (out / "peer_data" / "data.yaml").is_file()


def _half(name: str, rate: float, fingerprints: dict[str, str]) -> dict:
    """What one `--only` half writes (report.json), with made-up figures."""
    figures = {
        "scans": 10, "clean_scans": 4, "threat_instances": 7, "scan_detection_rate": rate,
        "scan_false_alarm_rate": 0.0, "map50": rate / 2,
        "categories": {c: {"detection_rate": rate, "ap50": 0.5} for c in CATEGORIES},
        "ms_per_scan": {"median": 80.0, "mean": 81.0},
    }  # fmt: skip
    model = {
        "training": {"minutes": 120, "elapsed_s": 7200.0, "done": "9 epochs", "snapshots": 9},
        "onnx": f"/x/{name}.onnx", "onnx_mb": 2.0, "tests": [figures],
        "curve": [{"epoch": 9, "minutes": 119.0, "detection_rate": rate}],
        "clean": {"scans": 62, "alarm_share": 0.05},
    }  # fmt: skip
    return {
        "minutes": 120, "label": "", "setup": "same machine.", "data": ["data/a"],
        "weights": [1.0], "val": "data/val", "tests": ["data/test"], "clean": "data/clean",
        "peer_tiles": {"tiles": 3000}, "fingerprints": fingerprints, "part": name,
        "host": {"cpu": "AMD EPYC", "cores": 2, "simd": ["AVX2"], "gpu": None},
        "date": "2026-12-07 17:00 UTC", "models": {name: model}, "wall_minutes": 130.0,
    }  # fmt: skip


def test_two_halves_of_a_split_run_merge_into_one_report_only_when_they_match(
    tmp_path: Path,
) -> None:
    """A run that does not fit one sitting: each model trained with --only, then joined.
    The halves must have seen the same data (fingerprints), budget and tests."""
    from bench import peer_accuracy
    from bench.peer import report

    same = {"data/a": "1" * 64, "data/val": "2" * 64}
    for name, rate in (("YOLOv8n", 0.6), ("CargoNet", 0.8)):
        (tmp_path / name).mkdir()
        text = report.write(_half(name, rate, same), tmp_path / name)
        assert f"# {name} alone" in text and f"| | {name} |" in text  # one column
    merged = peer_accuracy.merge([tmp_path / "YOLOv8n", tmp_path / "CargoNet"], tmp_path / "m")
    assert set(merged["models"]) == {"CargoNet", "YOLOv8n"}
    text = (tmp_path / "m" / "report.md").read_text()
    assert "| | CargoNet | YOLOv8n |" in text
    assert "| scan detection at 1 % false alarms | 80.0 % | 60.0 % |" in text
    assert "two sittings" in merged["setup"] and merged["wall_minutes"] == 260.0
    assert cv2.imread(str(tmp_path / "m" / "curves.png")) is not None
    # Different data in one half: refused, naming what differs.
    other = _half("CargoNet", 0.8, {**same, "data/val": "3" * 64})
    (tmp_path / "odd").mkdir()
    report.write(other, tmp_path / "odd")
    with pytest.raises(SystemExit, match="fingerprints"):
        peer_accuracy.merge([tmp_path / "YOLOv8n", tmp_path / "odd"], tmp_path / "m2")
    # The same data on another kind of machine (the same CPU name, AVX-512 now): refused,
    # as a wall-clock budget buys more steps there.
    faster = _half("CargoNet", 0.8, same)
    faster["host"] = {**faster["host"], "simd": ["AVX2", "AVX512F", "AVX512_SKX"]}
    (tmp_path / "faster").mkdir()
    report.write(faster, tmp_path / "faster")
    with pytest.raises(SystemExit, match="host"):
        peer_accuracy.merge([tmp_path / "YOLOv8n", tmp_path / "faster"], tmp_path / "m5")
    (tmp_path / "again").mkdir()
    report.write(_half("CargoNet", 0.7, same), tmp_path / "again")
    with pytest.raises(SystemExit, match="one of each"):
        peer_accuracy.merge([tmp_path / "CargoNet", tmp_path / "again"], tmp_path / "m3")
    with pytest.raises(SystemExit, match=r"no report\.json"):
        peer_accuracy.merge([tmp_path / "CargoNet", tmp_path / "nowhere"], tmp_path / "m4")


def test_a_data_set_s_fingerprint_follows_its_annotations_or_its_files(
    scans: Path, tmp_path: Path
) -> None:
    from bench.peer_accuracy import fingerprint

    coco = fingerprint(scans)
    assert coco == fingerprint(scans) and len(coco) == 64
    folder = tmp_path / "clean"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x" * 10)
    first = fingerprint(folder)
    (folder / "b.png").write_bytes(b"y")
    assert fingerprint(folder) != first != coco
