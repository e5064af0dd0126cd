"""Threat image projection (TIP): synthetic threats projected physically into real scans.

`write_tip_dataset` (the `cargoscan tip` command) writes the data set,
`write_tip_sheet` a picture to check it by eye, `check_dataset` that nothing but
the threats tells projected scans from clean ones. See the modules: `background`
(tone curve, noise, JPEG quality), `cargo_space` (containers, pitch, hiding
places), `project` (the physics), `dataset` (the data set).
"""

from training.tip.background import TipError
from training.tip.check import CheckResult, check_dataset
from training.tip.dataset import TipConfig, TipSummary, write_tip_dataset
from training.tip.sheet import write_tip_sheet

__all__ = [
    "CheckResult",
    "TipConfig",
    "TipError",
    "TipSummary",
    "check_dataset",
    "write_tip_dataset",
    "write_tip_sheet",
]
