"""Real scans as backgrounds: finding them, decoding them, and what projection must
know about each one that its file does not say.

- An 8-bit export is not transmission: the scanner maps attenuation through a
  display tone curve (`ExportCurve`). Threats add attenuation, so the image is
  taken back to attenuation through the inverse curve and forward again.
- A projected threat must carry the same noise as the image around it
  (`NoiseModel`, measured on the image itself), or it looks pasted.
- JPEG files are re-encoded at the quality they came with (`jpeg_quality`), so
  a projected scan's block artefacts are those of its clean neighbours.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.scan import Scan, ScanError, load_scan
from training.data import IMAGE_SUFFIXES

# Grey = air * (1 - a / a_max) ** power. Without a reference object of known
# attenuation in the image, a_max and power cannot be told apart from the cargo's own
# density, so they default to what bench/realism.py fits on the reference scans
# (linear in attenuation, black at a = 3.3); the air level is measured per image.
DEFAULT_A_MAX = 3.3
DEFAULT_POWER = 1.0
DEFAULT_JPEG_QUALITY = 90
# A column or row of a scan that is (almost) all black is padding the exporter added
# (black bars beside some reference scans), not an infinitely dense object.
_PAD_LEVEL = 0.02  # share of full scale
_PAD_SHARE = 0.97


class TipError(ValueError):
    """Bad input for threat projection: one line that names the file and the problem."""


@dataclass(frozen=True)
class BackgroundFile:
    """One scan under the backgrounds folder: high (or only) channel, optional low."""

    high: Path
    low: Path | None
    name: str  # `high` relative to the backgrounds folder, recorded in the annotations


def find_backgrounds(folder: Path | str) -> list[BackgroundFile]:
    """Every scan under `folder` (recursively), paired as `clean_scan_alarms` pairs them:
    a `<stem>_low` image beside a `<stem>_high` one is that scan's low energy."""
    root = Path(folder)
    if not root.is_dir():
        raise TipError(f"{root}: not a folder")
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_low")
    )
    if not paths:
        raise TipError(f"{root}: no scan images ({', '.join(IMAGE_SUFFIXES)}) in it")
    found = []
    for path in paths:
        low = None
        if "_high" in path.stem:
            candidate = path.with_name(path.name.replace("_high", "_low"))
            low = candidate if candidate.is_file() else None
        found.append(BackgroundFile(path, low, path.relative_to(root).as_posix()))
    return found


def load_background(background: BackgroundFile) -> Scan:
    """Decode with the service's own loader, so colour images, truncated files and
    mismatched energies are refused exactly as the service refuses them."""
    try:
        return load_scan(background.high, background.low)
    except ScanError as exc:
        raise TipError(str(exc)) from None


@dataclass(frozen=True)
class ExportCurve:
    """An 8-bit export's tone curve: grey = air * (1 - a / a_max) ** power."""

    air: float
    a_max: float = DEFAULT_A_MAX
    power: float = DEFAULT_POWER

    def grey(self, a: np.ndarray) -> np.ndarray:
        """Grey level (float) the export shows for attenuation `a`."""
        share = np.clip(1.0 - np.asarray(a, np.float32) / np.float32(self.a_max), 0.0, 1.0)
        return (np.float32(self.air) * share ** np.float32(self.power)).astype(np.float32)

    def attenuation(self, grey: np.ndarray) -> np.ndarray:
        """The inverse: attenuation of a grey level (brighter than air reads as air)."""
        t = np.clip(np.asarray(grey, np.float32) / np.float32(self.air), 0.0, 1.0)
        return (np.float32(self.a_max) * (1.0 - t ** np.float32(1.0 / self.power))).astype(
            np.float32
        )

    def slope(self, a: np.ndarray) -> np.ndarray:
        """-d grey / d a: grey levels per unit of attenuation (0 where the export saturates)."""
        share = np.clip(1.0 - np.asarray(a, np.float32) / np.float32(self.a_max), 0.0, 1.0)
        inside = share > 0
        safe = np.where(inside, share, 1.0) ** np.float32(self.power - 1.0)
        return np.where(inside, np.float32(self.air * self.power / self.a_max) * safe, 0.0).astype(
            np.float32
        )

    def to_dict(self) -> dict[str, float]:
        return {"air": round(self.air, 2), "a_max": self.a_max, "power": self.power}


def padding_masks(image: np.ndarray, full_scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) that are black padding, not scan."""
    dark = image <= _PAD_LEVEL * full_scale
    return dark.mean(axis=1) > _PAD_SHARE, dark.mean(axis=0) > _PAD_SHARE


def estimate_air_level(grey: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The grey level of air: the mode of the bright peak, refined to the mean of the
    levels around it.

    Why not a high percentile: exports clip air noise at 255, so p99.5 is 255 even
    where air sits at 240; every scan shows much air around the vehicle, and that
    air is the largest bright peak of the histogram.
    """
    values = np.asarray(grey)[valid] if valid is not None else np.asarray(grey).ravel()
    values = values.astype(np.int64)
    if values.size == 0:
        return 255.0
    hist = np.bincount(values, minlength=256).astype(np.float64)
    lo = int(np.percentile(values, 50))
    mode = lo + int(np.argmax(hist[lo:]))
    around = np.arange(max(mode - 3, 0), min(mode + 4, hist.size))
    return float(np.sum(hist[around] * around) / max(np.sum(hist[around]), 1.0))


def estimate_export_curve(grey: np.ndarray, tone: tuple[float, float] | None = None) -> ExportCurve:
    """The tone curve of an 8-bit export: measured air level; a_max and power given
    (`tone`) or the defaults (see DEFAULT_A_MAX)."""
    pad_rows, pad_cols = padding_masks(grey, 255)
    valid = ~pad_rows[:, None] & ~pad_cols[None, :]
    a_max, power = tone if tone is not None else (DEFAULT_A_MAX, DEFAULT_POWER)
    return ExportCurve(estimate_air_level(grey, valid), float(a_max), float(power))


@lru_cache(maxsize=1)
def _median_residual_gain() -> float:
    """RMS of `x - median3x3(x)` for unit white noise: turns the residual into a sigma."""
    noise = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    return float(np.sqrt(np.mean((noise - cv2.medianBlur(noise, 3)) ** 2)))


@dataclass(frozen=True)
class NoiseModel:
    """Noise standard deviation (in the image's own units) as a function of its level."""

    levels: tuple[float, ...]
    sigmas: tuple[float, ...]

    def std(self, level: np.ndarray) -> np.ndarray:
        return np.interp(level, self.levels, self.sigmas).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": [round(v, 1) for v in self.levels],
            "sigmas": [round(v, 3) for v in self.sigmas],
        }


def estimate_noise(image: np.ndarray, bins: int = 12, min_pixels: int = 400) -> NoiseModel:
    """How noisy the image is at each level, from its flat areas.

    The residual of a 3x3 median is noise plus structure; in each level bin only
    the flattest half of the pixels (by local variance) is kept, and the residual's
    RMS is scaled to a white-noise sigma. Real exports are often denoised and
    compressed (sigma well under one grey level); synthetic 16-bit scans follow
    Poisson statistics. Both are what this measures, without a model.
    """
    img = np.asarray(image)
    work = img if img.dtype in (np.uint8, np.uint16) else img.astype(np.float32)
    residual = img.astype(np.float32) - cv2.medianBlur(work, 3).astype(np.float32)
    smooth = cv2.blur(img.astype(np.float32), (7, 7))
    local_var = cv2.blur(img.astype(np.float32) ** 2, (7, 7)) - smooth**2
    full = 255 if img.dtype == np.uint8 else 65535
    pad_rows, pad_cols = padding_masks(img, full)
    keep = ~pad_rows[:, None] & ~pad_cols[None, :] & (smooth > 0.02 * full)
    # Sample pixels on a grid: enough for the statistics, cheap on 3 Mpx scans.
    step = max(1, int(np.sqrt(img.size / 400_000)))
    sl = (slice(3, -3, step), slice(3, -3, step))
    res, lev, var = residual[sl][keep[sl]], smooth[sl][keep[sl]], local_var[sl][keep[sl]]
    gain = _median_residual_gain()
    levels, sigmas = [], []
    if lev.size >= min_pixels:
        edges = np.unique(np.quantile(lev, np.linspace(0, 1, bins + 1)))
        for lo, hi in itertools.pairwise(edges):
            inside = (lev >= lo) & (lev <= hi)
            if inside.sum() < min_pixels:
                continue
            flat = inside & (var <= np.median(var[inside]))
            r = res[flat]
            clip = 6.0 * (1.4826 * np.median(np.abs(r)) + 1.0)
            levels.append(float(np.median(lev[flat])))
            sigmas.append(float(np.sqrt(np.mean(np.clip(r, -clip, clip) ** 2)) / gain))
    if not levels:  # a tiny or featureless image: call it quiet
        return NoiseModel((0.0, float(full)), (0.0, 0.0))
    order = np.argsort(levels)
    return NoiseModel(
        tuple(float(levels[i]) for i in order), tuple(float(sigmas[i]) for i in order)
    )


# The IJG (libjpeg) luminance quantisation table at quality 50, natural order.
_IJG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float64,
).ravel()


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((_IJG_LUMINANCE * scale + 50.0) / 100.0), 1, 255)


def jpeg_quality(path: Path | str) -> int | None:
    """The IJG quality a JPEG was saved at, from its luminance quantisation table
    (the nearest standard table); None for other formats."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format != "JPEG":
                return None
            tables = getattr(img, "quantization", None) or {}
    except OSError:
        return None
    if 0 not in tables or len(tables[0]) != 64:
        return DEFAULT_JPEG_QUALITY
    # Pillow gives the tables in natural (row-major) order, as _IJG_LUMINANCE is.
    table = np.asarray(tables[0], np.float64)
    errors = [np.abs(_ijg_table(q) - table).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


LICENCE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING")


def background_licences(files: list[BackgroundFile]) -> list[dict[str, str]]:
    """The licences the backgrounds come under, for the model card: a LICENSE (or COPYING)
    file beside a scan's real file (links followed) or up to two folders above it; its
    title is its first non-empty line. Real scans may carry terms (GPL-3.0 for the shared
    AJNA scans) that a model trained on them must name."""
    found: dict[str, str] = {}
    for f in files:
        folder = f.high.resolve().parent
        for place in (folder, folder.parent, folder.parent.parent):
            for name in LICENCE_NAMES:
                path = place / name
                if str(path) in found or not path.is_file():
                    continue
                try:
                    lines = path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                found[str(path)] = next((ln.strip() for ln in lines if ln.strip()), "")
    return [{"file": k, "title": v} for k, v in sorted(found.items())]
