"""The engine: a real exported model and card through ONNX Runtime, findings in scan pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.engine import Engine, Finding, ModelError, suppress_duplicates
from inference.preprocess import PREPROCESS_VERSION
from inference.scan import Scan

torch = pytest.importorskip("torch")  # only to build a model for the test


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export
    from training.model import CargoNet, ModelConfig

    root = tmp_path_factory.mktemp("engine")
    torch.manual_seed(0)
    net = CargoNet(ModelConfig())
    with torch.no_grad():
        net.heat.out.bias.fill_(-2.0)  # some findings above the floor, as a trained model gives
    ckpt = root / "ck.pt"
    torch.save({"model": net.state_dict(), "model_config": net.config.to_dict()}, ckpt)
    export(ckpt, root / "m.onnx")
    return root / "m.onnx"


def test_findings_come_back_in_the_original_scan_pixels(model_path: Path):
    engine = Engine.load(model_path)
    rng = np.random.default_rng(0)
    high = np.full((200, 500), 60000, np.uint16)
    high[80:120, 200:260] = 9000
    scan = Scan.from_arrays(high + rng.integers(0, 200, high.shape).astype(np.uint16))
    result = engine.analyze(scan)
    assert result.model_hw == (224, 512)  # padded to a multiple of 32
    assert result.anomaly.shape == (56, 128)
    assert result.findings, "the raised heat bias must give findings"
    scores = [f.score for f in result.findings]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.05
    for f in result.findings:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 <= x1 <= 500 and 0 <= y0 <= y1 <= 200
        assert f.category in engine.categories


def test_a_model_whose_bytes_do_not_match_its_card_is_refused(model_path: Path, tmp_path: Path):
    bad = tmp_path / "m.onnx"
    shutil.copy(model_path, bad)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["onnx"]["sha256"] = "0" * 64
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not match its card"):
        Engine.load(bad)


def test_a_model_for_another_preprocessing_is_refused(model_path: Path, tmp_path: Path):
    other = tmp_path / "m.onnx"
    shutil.copy(model_path, other)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["input"]["preprocess_version"] = "1"
    other.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="pre-processing v1"):
        Engine.load(other)


def test_a_model_of_the_previous_preprocessing_is_served(model_path: Path, tmp_path: Path):
    """v3 only samples a long 16-bit row's statistics: v2 models keep working."""
    older = tmp_path / "v2.onnx"
    shutil.copy(model_path, older)
    card = json.loads(model_path.with_suffix(".json").read_text())
    assert card["input"]["preprocess_version"] == PREPROCESS_VERSION == "3"
    card["input"]["preprocess_version"] = "2"
    older.with_suffix(".json").write_text(json.dumps(card))
    scan = Scan.from_arrays(np.full((64, 96), 60000, np.uint16))
    assert Engine.load(older).analyze(scan).anomaly.shape == (16, 24)


def test_the_hooks_run_between_the_stages_with_the_scan_s_anomaly_cells(model_path: Path):
    """``before_model`` after the pre-processing, ``after_model`` with the anomaly map
    cropped to the scan as soon as the network is done (the service's blob writes)."""
    engine = Engine.load(model_path)
    scan = Scan.from_arrays(np.full((200, 500), 60000, np.uint16))
    stages: list[str] = []
    cells: list[np.ndarray] = []
    network = engine.run
    engine.run = lambda model_input: stages.append("network") or network(model_input)
    analysis = engine.analyze(
        scan,
        before_model=lambda: stages.append("before"),
        after_model=lambda c: stages.append("after") or cells.append(c),
    )
    assert stages == ["before", "network", "after"]
    assert cells[0].shape == (50, 125)  # 200 x 500 in cells of 4, the padding cut off
    np.testing.assert_array_equal(cells[0], analysis.anomaly[:50, :125])


def test_a_missing_card_says_so(model_path: Path, tmp_path: Path):
    alone = tmp_path / "alone.onnx"
    shutil.copy(model_path, alone)
    with pytest.raises(ModelError, match=r"needs its \.onnx and \.json card"):
        Engine.load(alone)


@pytest.mark.parametrize(
    ("second", "kept"),
    [
        (Finding("person", 0.8, (12.0, 10.0, 110.0, 210.0)), 1),  # the same person again
        (Finding("firearm", 0.8, (12.0, 10.0, 110.0, 210.0)), 2),  # another category
        (Finding("person", 0.8, (150.0, 10.0, 250.0, 210.0)), 2),  # another person beside
    ],
)
def test_duplicate_peaks_of_one_object_are_suppressed(second: Finding, kept: int):
    first = Finding("person", 0.9, (10.0, 10.0, 110.0, 210.0))
    out = suppress_duplicates([first, second])
    assert len(out) == kept and out[0] is first


def _decode_one_at_a_time(engine: Engine, model_input, outputs, min_score: float):
    """The plain formula: each peak's box on its own, then greedy NMS against kept boxes."""
    from inference.boxes import iou_matrix
    from inference.engine import MAX_FINDINGS, NMS_IOU

    heat, box, _ = outputs
    flat = heat[0].reshape(-1)
    order = np.argsort(-flat, kind="stable")[:MAX_FINDINGS]
    _, h, w = heat[0].shape
    found = []
    for idx in order:
        if flat[idx] < min_score:
            break
        c, rest = divmod(int(idx), h * w)
        y, x = divmod(rest, w)
        left, up, right, down = box[0, :, y, x]
        px, py = (x + 0.5) * engine.stride, (y + 0.5) * engine.stride
        b = model_input.to_original(np.array([[px - left, py - up, px + right, py + down]]))
        found.append((engine.categories[c], float(flat[idx]), tuple(map(float, b[0]))))
    kept: list[tuple] = []
    for f in found:
        same = [k[2] for k in kept if k[0] == f[0]]
        if not same or not (iou_matrix([f[2]], same) > NMS_IOU).any():
            kept.append(f)
    return kept


def test_decoding_all_peaks_at_once_matches_the_plain_formula_bit_for_bit(model_path: Path):
    # Many overlapping peaks of every category (distinct scores, as a real heat map has):
    # the vectorised boxes and the one-matrix suppression keep exactly what the loop keeps.
    from inference.preprocess import preprocess

    engine = Engine.load(model_path)
    rng = np.random.default_rng(3)
    scan = Scan.from_arrays(rng.integers(20000, 60000, (300, 700)).astype(np.uint16))
    model_input = preprocess(scan)
    outputs = [np.asarray(o) for o in engine.run(model_input)]
    heat = outputs[0]
    heat[...] = rng.permutation(heat.size).reshape(heat.shape) / heat.size  # no ties
    outputs[1][...] = rng.uniform(1, 30, outputs[1].shape).astype(np.float32)
    for min_score in (0.999, 0.9995, 0.0):
        got = engine.decode(scan, model_input, outputs, min_score).findings
        want = _decode_one_at_a_time(engine, model_input, outputs, min_score)
        assert [(f.category, f.score, f.box) for f in got] == want
        assert 1 < len(want) < 100  # some suppressed, some kept
