"""`cargoscan analyze`: offline results and annotated pictures from real exported models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cargoscan.cli import main
from inference.annotate import CATEGORY_COLOURS, annotate
from inference.render import VIEWS
from inference.scan import Scan
from tests.inference.service.service_helpers import scan_pngs


def _write_pair(folder: Path, name: str, seed: int) -> Path:
    files = scan_pngs(seed=seed)
    (folder / f"{name}_high.png").write_bytes(files["high"][1])
    (folder / f"{name}_low.png").write_bytes(files["low"][1])
    return folder / f"{name}_high.png"


def test_each_scan_gets_a_result_json_an_annotated_picture_and_an_anomaly_map(
    models: dict[str, Path], tmp_path: Path
):
    scans = [_write_pair(tmp_path, f"truck{k}", k) for k in range(2)]
    out = tmp_path / "out"
    args = ["analyze", *map(str, scans), "--model", str(models["alarm"])]
    assert main([*args, "--out", str(out)]) == 0
    for k in range(2):
        result = json.loads((out / f"truck{k}.json").read_text())
        assert result["scan_id"] == f"truck{k}" and result["verdict"] == "alarm"
        assert result["findings"] and result["anomaly_map"] == f"truck{k}_anomaly.png"
        picture = cv2.imread(str(out / f"truck{k}.png"))
        scan_h = cv2.imread(str(scans[k]), cv2.IMREAD_UNCHANGED).shape[0]
        assert picture.shape[0] == scan_h + 36  # the scan below a verdict banner
        assert cv2.imread(str(out / f"truck{k}_anomaly.png")) is not None


def test_a_clear_model_finds_nothing_and_says_clear(models: dict[str, Path], tmp_path: Path):
    scan = _write_pair(tmp_path, "s", 3)
    args = ["analyze", str(scan), "--model", str(models["clear"])]
    assert main([*args, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["verdict"] == "clear" and result["findings"] == []


def test_a_bad_file_is_reported_and_the_others_still_analysed(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    good = _write_pair(tmp_path, "good", 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    args = ["analyze", str(bad), str(good), "--model", str(models["alarm"])]
    assert main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert (tmp_path / "o" / "good.json").is_file() and not (tmp_path / "o" / "bad.json").exists()


def test_a_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    scan = _write_pair(tmp_path, "s", 0)
    args = ["analyze", str(scan), "--model", str(tmp_path / "no.onnx")]
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_findings_are_drawn_in_their_category_colour():
    scan = Scan(np.full((80, 200), 30000, np.uint16))
    finding = {"category": "firearm", "score": 0.9, "box": [50, 20, 90, 60], "source": "detector"}
    result = {"verdict": "alarm", "risk": 0.9, "findings": [finding]}
    picture = annotate(scan, result, "grey")
    edge = picture[36 + 40, 50]  # left side of the box, below the banner
    assert tuple(int(v) for v in edge) == CATEGORY_COLOURS["firearm"]


def test_the_cli_knows_every_view():
    from cargoscan.cli import VIEW_NAMES

    assert set(VIEW_NAMES) == set(VIEWS)


def test_the_default_model_is_found_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The shipped model is found from the source tree, not `models/` under the cwd."""
    scan = _write_pair(tmp_path, "s", 2)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", str(scan), "--out", "out"]) == 0
    result = json.loads((tmp_path / "out" / "s.json").read_text())
    assert result["model"]["name"] == "cargoscan-default"


@pytest.mark.parametrize("command", ["analyze", "render", "synth"])
def test_an_output_that_is_a_file_is_refused_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    scan = _write_pair(tmp_path, "s", 4)
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    args = {
        "analyze": ["analyze", str(scan), "--out", str(a_file)],
        "render": ["render", str(scan), "--out", str(a_file / "x.png")],
        "synth": ["synth", "--count", "1", "--out", str(a_file)],
    }[command]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "a-file is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_an_output_that_cannot_be_made_is_one_line_not_a_traceback(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A place the checks let through but the kernel refuses (even to root): /proc."""
    scan = _write_pair(tmp_path, "s", 5)
    out = "/proc/cargoscan-out"
    assert main(["analyze", str(scan), "--model", str(models["clear"]), "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cargoscan analyze: /proc/cargoscan-out") and "Traceback" not in err
