"""A site's operating point: its own alarm and review thresholds laid over a model's card.

A model's card holds thresholds calibrated where the model was made. A site switches
CargoScan on with its own cleared traffic (`cargoscan commission`), which sets thresholds
for the alarm and review rates it wants; they are written to a file of their own beside
the model, so the model and its card (and the card's sha256 check) stay as they are. The
service and `cargoscan analyze` lay such a file over the card: every key in
:data:`KEYS` it holds replaces the card's.

The file names the model it was made for (the ONNX file's sha256): thresholds are scores
of one network, meaningless for another, so a mismatch is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.contracts import ModelCard

__all__ = ["KEYS", "KIND", "OperatingPointError", "apply", "load", "validate"]

KIND = "cargoscan-operating-point"
KEYS = (
    "thresholds",
    "thresholds_8bit",
    "review_thresholds",
    "review_thresholds_8bit",
    "anomaly_level",
    "anomaly_level_8bit",
)
"""The card keys a site file may replace (see :mod:`inference.result`)."""


class OperatingPointError(ValueError):
    """An operating-point file that cannot be used with this model, and why."""


def _score(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0


def validate(
    op: Any, card: ModelCard | Mapping[str, Any], where: str = "operating point"
) -> dict[str, Any]:
    """``op`` checked against the model's ``card``; returns it. Raises OperatingPointError
    (and CardError for a card dict that is not a valid card)."""
    card = ModelCard.of(card)
    if not isinstance(op, dict) or op.get("kind") != KIND:
        raise OperatingPointError(f"{where}: not an operating-point file (kind {KIND!r})")
    want = card.onnx.sha256 or ""
    got = str(op.get("model_sha256") or "")
    if got != want:
        raise OperatingPointError(
            f"{where}: made for the model with sha256 {got[:12] or '?'}..., "
            f"this model is {want[:12]}...: commission the site again for this model"
        )
    categories = set(card.categories)
    for key in KEYS:
        if key not in op:
            continue
        value = op[key]
        if key.startswith("anomaly_level"):
            if not _score(value):
                raise OperatingPointError(f"{where}: {key} must be a number in [0, 1]")
            continue
        if not isinstance(value, dict) or not all(_score(v) for v in value.values()):
            raise OperatingPointError(f"{where}: {key} must map categories to scores in [0, 1]")
        unknown = set(value) - categories
        if unknown:
            raise OperatingPointError(
                f"{where}: {key} names categories the model does not have: {sorted(unknown)}"
            )
    if not isinstance(op.get("site"), str) or not op["site"].strip():
        raise OperatingPointError(f"{where}: 'site' must name the site")
    return op


def load(path: Path | str, card: ModelCard | Mapping[str, Any]) -> dict[str, Any]:
    """Read and check an operating-point file for the model whose card is ``card``."""
    path = Path(path)
    try:
        op = json.loads(path.read_text())
    except FileNotFoundError:
        raise OperatingPointError(f"{path}: no such operating-point file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OperatingPointError(f"{path}: not readable JSON ({exc})") from None
    return validate(op, card, str(path))


def apply(card: ModelCard | Mapping[str, Any], op: dict[str, Any]) -> ModelCard:
    """A copy of ``card`` with the operating point's keys in place of its own (validated
    again, so the copy holds the same types as a card read from a file)."""
    laid = {key: op[key] for key in KEYS if key in op}
    return ModelCard.of(
        {**ModelCard.of(card).to_dict(), **laid, "operating_point_site": op["site"]}
    )
