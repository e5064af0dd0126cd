"""notebooks/walkthrough.ipynb runs top to bottom in a real kernel at the tiny scale.

No mocks: the kernel is this interpreter's (`python3` resolves to `sys.executable`
once ipykernel is installed in the venv), the notebook generates its data,
trains, exports and evaluates into pytest's tmp_path, and the test checks the
files a run leaves and the outputs the notebook shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
METRICS_KEYS = {
    "categories",
    "scan",
    "map50",
    "map",
    "clean_scans",
    "threat_instances",
    "at_card_thresholds",
    "single_energy",
}


def _text(cell: dict) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/markdown", out["data"].get("text/plain", "")))
    return "".join(parts)


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.mark.slow
def test_walkthrough_runs_at_tiny_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "work"
    monkeypatch.setenv("CARGOSCAN_NOTEBOOK_SCALE", "tiny")
    monkeypatch.setenv("CARGOSCAN_NOTEBOOK_DIR", str(work))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # to read when it fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors

    # The kernel was this venv's interpreter, and it saw the tiny settings.
    settings = next(c for c in code if "settings" in c.metadata.get("tags", []))
    shown = _text(settings)
    assert "scale tiny" in shown and str(work) in shown
    assert f"prefix {sys.prefix})" in shown

    # Data: three COCO sets, each with a clean scan (thresholds need one).
    for split, count in (("train", 4), ("val", 3), ("test", 3)):
        coco = json.loads((work / "data" / split / "annotations.json").read_text())
        assert len(coco["images"]) == count
        assert any(im["clean"] for im in coco["images"]), split

    # Training run, export (ONNX + card), evaluation.
    run = work / "run"
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt"):
        assert (run / name).is_file(), name
    model = work / "models" / "walkthrough.onnx"
    card = json.loads(model.with_suffix(".json").read_text())
    assert model.stat().st_size > 10_000
    assert set(card["thresholds"]) == set(card["categories"])
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert set(metrics) >= METRICS_KEYS
    assert set(metrics["categories"]) == set(card["categories"])
    for cat in metrics["categories"].values():
        assert "0.01" in cat["detection_rate_at_far"] and "0.01" in cat["threshold_at_far"]
    assert metrics["clean_scans"] >= 1 and metrics["threat_instances"] >= 1

    # It showed pictures: scan views, the labelled scan, curves, the worst-miss crops.
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 10
    assert "worst-missed threats" in "".join(_text(c) for c in code)
