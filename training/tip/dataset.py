"""`cargoscan tip`: threats projected into real scans, written as `cargoscan synth` writes.

Layout of OUT (`inference.coco`, as `cargoscan synth` writes it, so `train` and
`evaluate` read it unchanged):
    annotations.json         COCO; per image file_name (high), low_file_name (if any),
                             the synth keys, and `tip`: background file, pitch,
                             export curve, JPEG quality, noise, cargo box
    images/NNNNNN_high.jpg   8-bit backgrounds: 8-bit JPEG at the source's quality
    images/NNNNNN_high.png   16-bit backgrounds: 16-bit PNG per energy (+ _low.png)

Output i uses background permutation(seed)[i % n] and is a pure function of
(seed, i), so the bytes do not depend on the number of workers. Clean outputs go
through exactly the same decode, curve, noise and encode path as projected ones.
Everything is written to a staging folder beside OUT and renamed at the end:
OUT is either complete or untouched.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from inference.cargo.containers import median_filter_1d
from inference.coco import (
    coco_document,
    encode_png,
    image_entry,
    load_document,
    number_annotations,
    threat_annotation,
    write_annotations,
)
from inference.preprocess import attenuation
from training.synth.dataset import worker_pool
from training.synth.decoys import DECOYS
from training.synth.decoys import LIKE as DECOY_LIKE
from training.synth.physics import linac_spectrum
from training.synth.scene import CATEGORY_WEIGHTS, MASK_THRESHOLD
from training.synth.threats import CATEGORIES, MIN_ROOM, Placement
from training.tip.background import (
    DEFAULT_JPEG_QUALITY,
    BackgroundFile,
    ExportCurve,
    NoiseModel,
    TipError,
    background_licences,
    estimate_export_curve,
    estimate_noise,
    find_backgrounds,
    jpeg_quality,
    load_background,
    padding_masks,
)
from training.tip.cargo_space import (
    CargoSpace,
    Spot,
    cargo_mask,
    find_cargo_space,
    find_spots,
)
from training.tip.project import (
    HOST_MATERIAL,
    attenuation_change,
    displaced_host,
    draw_threat,
    magnification_at,
    patch_window,
    placed_mass,
)

GENERATOR = "cargoscan tip"
_SMOOTH_SIGMA_PX = 1.5  # background attenuation without its noise, for the physics


@dataclass(frozen=True)
class TipConfig:
    """Projection settings (recorded in the annotations)."""

    clean_fraction: float = 1 / 3
    max_threats: int = 4
    high_mv: float = 6.0  # the single-energy scanner's energy is taken as the high one
    low_mv: float = 4.0
    tone: tuple[float, float] | None = None  # 8-bit export curve (a_max, power); None: default
    decoys: int = 0
    """At most this many unlabelled benign objects (`training.synth.decoys`) per output,
    threat-free ones included: 0 for evaluation sets, which stay as they were."""

    def to_dict(self) -> dict[str, Any]:
        recorded = {
            "clean_fraction": self.clean_fraction,
            "max_threats": self.max_threats,
            "high_mv": self.high_mv,
            "low_mv": self.low_mv,
            "tone": list(self.tone) if self.tone else None,
        }
        if self.decoys:  # absent otherwise: earlier sets keep their annotations byte for byte
            recorded["decoys"] = self.decoys
        return recorded


@dataclass
class BackgroundInfo:
    """What one background's analysis found: a pure function of its file."""

    file: BackgroundFile
    bit_depth: int
    shape: tuple[int, int]
    curves: list[ExportCurve | None]  # per channel (high, low): 8-bit tone curves
    noise: list[NoiseModel]
    quality: int | None  # JPEG quality of 8-bit outputs
    space: CargoSpace


@dataclass
class TipSummary:
    out: Path
    images: int
    clean: int
    instances: dict[str, int]
    backgrounds: int
    seconds_per_scan: float

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.instances.items())
        return (
            f"wrote {self.images} scans ({self.clean} clean) from {self.backgrounds} backgrounds "
            f"to {self.out}: {per} ({self.seconds_per_scan:.2f} s per scan)"
        )


def _fits(spot: Spot, category: str) -> bool:
    """The synthetic generator's rule: enough room (w, h, depth) for the category."""
    mw, mh, md = MIN_ROOM[category]
    return (
        category in spot.categories
        and spot.room_mm[0] >= mw * 0.6
        and spot.room_mm[1] >= mh * 0.4
        and spot.depth_mm >= md * 0.5
    )


def detection_attenuation(scan_high: np.ndarray, curve: ExportCurve | None) -> np.ndarray:
    """Attenuation for finding the cargo. 16-bit: the service's own air calibration.
    8-bit: air per row (exports drift by 10-15 grey levels from row to row) from the
    scan's own columns, not its black padding (which would pass for a wall), kept
    under the image's air level (noisy air clips at 255: a high percentile would make
    air look like matter), through the tone curve. The two border rows (a dark line on
    some exports) copy the next ones."""
    if curve is None:
        return attenuation(scan_high)
    pad_rows, pad_cols = padding_masks(scan_high, 255)
    image = scan_high.astype(np.float32)
    scan_cols = image[:, ~pad_cols] if (~pad_cols).any() else image
    row_air = np.percentile(scan_cols, 99, axis=1)
    lit = row_air > curve.air - 25
    rows = np.arange(row_air.size)
    if lit.any():
        row_air = np.interp(rows, rows[lit], row_air[lit])
    row_air = np.minimum(median_filter_1d(row_air, 31), curve.air + 2)
    t = np.clip(image / np.maximum(row_air, 1.0)[:, None].astype(np.float32), 0.0, 1.0)
    a = curve.a_max * (1.0 - t ** (1.0 / curve.power))
    a[:, pad_cols] = 0.0
    a[pad_rows, :] = 0.0
    if a.shape[0] > 6:
        a[:2], a[-2:] = a[2], a[-3]
    return a.astype(np.float32)


def _channel_attenuation(channel: np.ndarray, curve: ExportCurve | None) -> np.ndarray:
    """The image's attenuation as the projection reads it (one curve both ways)."""
    return curve.attenuation(channel) if curve is not None else attenuation(channel)


def analyse_background(file: BackgroundFile, cfg: TipConfig) -> BackgroundInfo:
    """Decode and measure one background; refuse one no threat fits in."""
    scan = load_background(file)
    channels = [scan.high] + ([scan.low] if scan.low is not None else [])
    eight_bit = scan.bit_depth == 8
    curves = [estimate_export_curve(c, cfg.tone) if eight_bit else None for c in channels]
    h, w = scan.shape
    a = detection_attenuation(scan.high, curves[0])
    _, pad_cols = padding_masks(scan.high, scan.max_value)
    space = find_cargo_space(a, pad_cols)
    a_smooth = cv2.GaussianBlur(_channel_attenuation(scan.high, curves[0]), (0, 0), 1.5)
    spots = find_spots(space, cargo_mask(a_smooth, space), a_smooth, np.random.default_rng(0))
    if not any(_fits(s, c) for s in spots for c in CATEGORIES):
        size = f"{w}x{h} px at {space.pitch_x_mm:.1f}x{space.pitch_y_mm:.1f} mm per pixel"
        # Under 1.5 x 1 m no vehicle fits: that is a crop or a thumbnail, not a scan.
        if w * space.pitch_x_mm < 1500 or h * space.pitch_y_mm < 1000:
            raise TipError(f"{file.high}: scan too small for any threat ({size})")
        raise TipError(f"{file.high}: no container or goods found to hide a threat in ({size})")
    quality = (jpeg_quality(file.high) or DEFAULT_JPEG_QUALITY) if eight_bit else None
    return BackgroundInfo(
        file,
        int(scan.bit_depth),
        (h, w),
        curves,
        [estimate_noise(c) for c in channels],
        quality,
        space,
    )


def _is_clean(index: int, n_backgrounds: int, fraction: float) -> bool:
    """Whether output `index` (background slot `index % n` of cycle `index // n`) is left
    clean: each background in its share of the cycles, each cycle with its share of
    clean outputs, so every background comes out clean as often as any other (within
    one). The plain spread over the indices left the same backgrounds always clean when n
    is a multiple of 3; the rule before this one turned the clean slots by one background
    a cycle, which left 37 of 62 held-out backgrounds never clean and 25 clean up to 15
    times in 900 outputs (byte-identical copies), so "1 % of clean scans" was set by one
    background (docs/real-scans.md)."""
    cycle, slot = divmod(index, n_backgrounds)
    return int((cycle + slot + 1) * fraction) > int((cycle + slot) * fraction)


def _mask_box(window: tuple[int, int, int, int], mask: np.ndarray) -> list[int]:
    """[x, y, w, h] in the scan of a mask drawn on `window`."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [
        int(window[0] + cols[0]),
        int(window[1] + rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    ]


def _overlaps(box: list[int], others: list[list[int]]) -> bool:
    x, y, w, h = box
    return any(
        x < ox + ow and ox < x + w and y < oy + oh and oy < y + h for ox, oy, ow, oh in others
    )


@dataclass
class _Label:
    category: str
    subtype: str
    where: str
    window: tuple[int, int, int, int]
    mask: np.ndarray  # bool, on the window
    mass_kg: float
    contrast: float
    contrast_to_noise: float

    def bbox(self) -> list[int]:
        """[x, y, w, h] of the mask in the scan."""
        return _mask_box(self.window, self.mask)

    def decoy_record(self) -> dict[str, Any]:
        """What the image entry says of a decoy (never an annotation: it is no threat)."""
        return {"kind": self.subtype, "bbox": self.bbox(), "where": self.where,
                "contrast": round(self.contrast, 4)}  # fmt: skip

    def coco(self, shape: tuple[int, int]) -> dict[str, Any]:
        x0, y0, x1, y1 = self.window
        full = np.zeros(shape, bool)
        full[y0:y1, x0:x1] = self.mask
        return threat_annotation(
            CATEGORIES.index(self.category) + 1,
            self.bbox(),
            full,
            subtype=self.subtype,
            concealment=self.where,
            mass_kg=self.mass_kg,
            contrast=self.contrast,
            contrast_to_noise=self.contrast_to_noise,
        )


class _Projection:
    """One output scan being made: the background's channels and what threats add."""

    def __init__(self, info: BackgroundInfo, cfg: TipConfig, scan_channels: list[np.ndarray]):
        self.info, self.cfg = info, cfg
        self.channels = scan_channels
        self.a = [
            _channel_attenuation(c, k) for c, k in zip(scan_channels, info.curves, strict=True)
        ]
        self.a_smooth = [cv2.GaussianBlur(a, (0, 0), _SMOOTH_SIGMA_PX) for a in self.a]
        self.delta = [np.zeros(a.shape, np.float32) for a in self.a]
        self.spectra = [linac_spectrum(cfg.high_mv), linac_spectrum(cfg.low_mv)]
        self.goods = cargo_mask(self.a_smooth[0], info.space)
        self.taken: list[tuple[float, float, float, float]] = []  # threats' and decoys' room
        self.spots: list[Spot] = []
        self.threat_boxes: list[list[int]] = []  # [x, y, w, h] of each placed threat

    def place(self, n_threats: int, rng: np.random.Generator) -> list[_Label]:
        """Up to `n_threats` threats where they fit, 20 tries each (as synth does)."""
        space = self.info.space
        self.spots = spots = find_spots(space, self.goods, self.a_smooth[0], rng)
        names = list(CATEGORY_WEIGHTS)
        probs = np.array([CATEGORY_WEIGHTS[k] for k in names])
        labels = []
        for _ in range(n_threats):
            for _attempt in range(20):
                cat = names[int(rng.choice(len(names), p=probs / probs.sum()))]
                fits = [s for s in spots if _fits(s, cat)]
                if not fits:
                    continue
                spot = fits[int(rng.integers(len(fits)))]
                label = self._try(cat, spot, rng)
                if label is not None:
                    labels.append(label)
                    break
        self.threat_boxes = [lab.bbox() for lab in labels]
        return labels

    def place_decoys(self, n_decoys: int, rng: np.random.Generator) -> list[_Label]:
        """Up to `n_decoys` benign objects after the threats (call `place` first), each in
        the room and places of the threat category it resembles, clear of the threats."""
        kinds = list(DECOYS)
        decoys = []
        for _ in range(n_decoys):
            for _attempt in range(20):
                kind = kinds[int(rng.integers(len(kinds)))]
                fits = [s for s in self.spots if _fits(s, DECOY_LIKE[kind])]
                if not fits:
                    continue
                spot = fits[int(rng.integers(len(fits)))]
                label = self._try(DECOY_LIKE[kind], spot, rng, decoy=kind, avoid=self.threat_boxes)
                if label is not None:
                    decoys.append(label)
                    break
        return decoys

    def _try(
        self,
        cat: str,
        spot: Spot,
        rng: np.random.Generator,
        decoy: str | None = None,
        avoid: list[list[int]] | None = None,
    ) -> _Label | None:
        space, shape = self.info.space, self.info.shape
        px, py = space.pitch_x_mm, space.pitch_y_mm
        mw, mh, md = MIN_ROOM[cat]
        if spot.centres is not None:
            cx, cy = spot.centres[int(rng.integers(len(spot.centres)))]
        else:
            x0, y0, x1, y1 = spot.region
            hw = max((x1 - x0) / 2 - mw / 2 / px, 0.0)
            hh = max((y1 - y0) / 2 - mh / 2 / py, 0.0)
            cx = (x0 + x1) / 2 + rng.uniform(-hw, hw)
            cy = (y0 + y1) / 2 + rng.uniform(-hh, hh)
            if spot.floor_row is not None:  # for the overlap test; set again once drawn
                cy = spot.floor_row - (mh / 2 + 20) / py
        w_px, h_px = mw / px, mh / py
        if any(
            abs(cx - tx) < (w_px + tw) / 2 and abs(cy - ty) < (h_px + th) / 2
            for tx, ty, tw, th in self.taken
        ):
            return None
        half_room = max(spot.depth_mm / 2 - md / 2, 0.0)
        z = spot.z_mm + rng.uniform(-half_room, half_room)
        placement = Placement(
            0.0,
            0.0,
            min(spot.room_mm[0], mw * 2.5),
            min(spot.room_mm[1], mh * 2.5),
            spot.depth_mm,
            HOST_MATERIAL if spot.host else None,
            0.0,
            spot.where,
            z,
        )
        draw = DECOYS[decoy] if decoy is not None else None
        patch = draw_threat(cat, placement, px, py, magnification_at(z), rng, draw)
        if patch is None:
            return None
        mask = placed_mass(patch) > MASK_THRESHOLD
        if mask.sum() < 12:
            return None
        if spot.floor_row is not None:  # stand it on the floor, 2 cm clear
            lowest = np.flatnonzero(mask.any(axis=1))[-1] + 0.5
            cy = spot.floor_row - 20 / py - (lowest - mask.shape[0] / 2)
        window = patch_window((float(cx), float(cy)), patch, shape)
        if window is None:
            return None
        x0, y0, x1, y1 = window
        box = _mask_box(window, mask)
        if avoid and _overlaps(box, avoid):
            return None  # a decoy never lies on a threat: that region stays the threat's
        if spot.bounds is not None:
            bx0, by0, bx1, by1 = spot.bounds
            if box[0] < bx0 or box[1] < by0 or box[0] + box[2] > bx1 or box[1] + box[3] > by1:
                return None  # it would stick out of the container (or the cab)
        if spot.host and self.goods[y0:y1, x0:x1][mask].mean() < 0.5:
            return None  # mostly outside the goods: not hidden in the load
        curve = self.info.curves[0]
        if (
            curve is not None
            and np.median(self.a_smooth[0][y0:y1, x0:x1][mask]) > 0.97 * curve.a_max
        ):
            # Where the 8-bit export is black, nothing added can show: a label there
            # would teach a detector to fire on black. (16-bit scans never saturate so.)
            return None
        displaced = None
        if spot.host:
            m = (window[3] - window[1] - patch.mass.shape[0]) // 2
            goods_a = self.a_smooth[0][y0 + m : y1 - m, x0 + m : x1 - m] - space.wall_level
            displaced = displaced_host(patch, goods_a, self.spectra[0])
        changes = []
        for k in range(len(self.channels)):
            change = attenuation_change(
                patch, self.a_smooth[k][y0:y1, x0:x1], self.spectra[k], displaced
            )
            self.delta[k][y0:y1, x0:x1] += change
            changes.append(change)
        contrast, cnr = self._visibility(window, changes[0], mask)
        self.taken.append((float(cx), float(cy), w_px, h_px))
        return _Label(cat, patch.subtype, spot.where, window, mask, patch.mass_kg, contrast, cnr)

    def _visibility(
        self, window: tuple[int, int, int, int], change: np.ndarray, mask: np.ndarray
    ) -> tuple[float, float]:
        """Median over the mask of the change the image shows in high-energy attenuation
        (noise-free, net of displaced cargo; an 8-bit export's saturation hides what
        goes beyond a_max), and that change over the image's noise there."""
        x0, y0, x1, y1 = window
        a_bg = self.a_smooth[0][y0:y1, x0:x1]
        level = cv2.GaussianBlur(self.channels[0].astype(np.float32), (0, 0), 1.5)[y0:y1, x0:x1]
        curve, noise = self.info.curves[0], self.info.noise[0]
        sigma_level = np.sqrt(noise.std(level) ** 2 + 1.0 / 12.0)  # quantisation at least
        if curve is not None:
            seen = curve.attenuation(curve.grey(a_bg + change)) - curve.attenuation(
                curve.grey(a_bg)
            )
            sigma_a = sigma_level / np.maximum(curve.slope(a_bg), 1e-6)
        else:
            seen = change
            sigma_a = sigma_level / np.maximum(level, 1.0)
        return float(np.median(seen[mask])), float(np.median((seen / sigma_a)[mask]))

    def render(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The output channels: the background where nothing was added; elsewhere its
        own values moved by what the threats change, plus the extra noise the new
        level carries (the image's own noise model), rounded to its bit depth."""
        outputs = []
        for k, channel in enumerate(self.channels):
            out = channel.copy()
            touched = np.flatnonzero(np.abs(self.delta[k]) > 1e-6)
            if touched.size:
                old = channel.ravel()[touched].astype(np.float32)
                change = self.delta[k].ravel()[touched]
                curve = self.info.curves[k]
                if curve is not None:
                    a_old = self.a[k].ravel()[touched]
                    new = old + curve.grey(a_old + change) - curve.grey(a_old)
                    carried = 1.0  # the difference keeps the old noise as it was
                else:
                    carried = np.exp(-change)
                    new = old * carried
                std = self.info.noise[k].std
                extra = np.maximum(std(new) ** 2 - (carried * std(old)) ** 2, 0.0)
                new = new + np.sqrt(extra) * rng.standard_normal(new.size, dtype=np.float32)
                full = 255 if channel.dtype == np.uint8 else 65535
                out.ravel()[touched] = np.clip(np.rint(new), 0, full).astype(channel.dtype)
            outputs.append(out)
        return outputs


def _encode(image: np.ndarray, quality: int | None) -> tuple[str, bytes]:
    """8-bit: JPEG at the source's quality; 16-bit: PNG as synth writes them."""
    if image.dtype != np.uint8:
        return ".png", encode_png(image)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality or 90)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 greyscale array
        raise RuntimeError("image encoding failed")
    return ".jpg", buf.tobytes()


def project_one(args: tuple[int, int, BackgroundInfo, TipConfig, str, bool]) -> dict[str, Any]:
    """Make output `index`: decode, project (or not), encode; return its COCO fragments."""
    index, seed, info, cfg, out, clean = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    scan = load_background(info.file)
    channels = [scan.high] + ([scan.low] if scan.low is not None else [])
    projection = _Projection(info, cfg, channels)
    n_threats = 0 if clean else int(min(rng.geometric(0.55), cfg.max_threats))
    labels = projection.place(n_threats, rng)
    decoys = []
    if cfg.decoys:  # no draw otherwise: outputs without decoys stay byte for byte
        decoys = projection.place_decoys(int(rng.integers(1, cfg.decoys + 1)), rng)
    rendered = projection.render(rng)
    stem = f"images/{index:06d}"
    names = []
    for suffix_name, image in zip(("high", "low"), rendered, strict=False):
        suffix, data = _encode(image, info.quality)
        name = f"{stem}_{suffix_name}{suffix}"
        (Path(out) / name).write_bytes(data)
        names.append(name)
    h, w = info.shape
    space = info.space
    goods = projection.goods
    load = ["empty" if goods[:, c0:c1].mean() < 0.01 else "loaded" for c0, c1 in space.containers]
    image = image_entry(
        index + 1,
        names[0],
        int(w),
        int(h),
        info.bit_depth,
        low_file_name=names[1] if len(names) > 1 else None,
        cargo_region=list(space.box) if space.box else [0, 0, int(w), int(h)],
        clean=not labels,
        vehicle={
            "arrangement": space.pitch_source if space.box else "unknown",
            "containers": len(space.containers),
        },
        load=load or ["unknown"],
        true_manifest=None,  # a real background's contents are not known
        declared_manifest=None,
        manifest_discrepancy=None,
        scanner={
            "kind": "real",
            "high_mv": cfg.high_mv,
            "low_mv": cfg.low_mv if len(channels) > 1 else None,
            "pixel_pitch_mm": round(space.pitch_y_mm, 3),
        },
        tip={
            "background": info.file.name,
            "background_low": info.file.low.name if info.file.low else None,
            "export_curve": info.curves[0].to_dict() if info.curves[0] else None,
            "jpeg_quality": info.quality,
            "noise": [n.to_dict() for n in info.noise],
            **space.to_dict(),
            **({"decoys": [d.decoy_record() for d in decoys]} if cfg.decoys else {}),
        },
    )
    return {"image": image, "annotations": [lab.coco((h, w)) for lab in labels]}


def _analyse_job(args: tuple[BackgroundFile, TipConfig]) -> BackgroundInfo:
    return analyse_background(*args)


def _is_tip_output(folder: Path) -> bool:
    try:
        return load_document(folder).get("info", {}).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path) -> None:
    """OUT may be new, empty, or an earlier tip output (replaced); nothing else."""
    if out.exists() and not out.is_dir():
        raise TipError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not _is_tip_output(out):
        raise TipError(
            f"{out}: exists and is not an earlier `cargoscan tip` output; "
            "choose another --out or remove it"
        )


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A folder beside OUT to write into; renamed to OUT when all went well, removed
    when not, so a failed run leaves nothing that looks complete."""
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (staging / "images").mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise TipError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield staging
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_tip_dataset(
    backgrounds: Path | str,
    out: Path | str,
    *,
    count: int,
    seed: int = 0,
    workers: int | None = None,
    config: TipConfig | None = None,
    progress: bool = True,
) -> TipSummary:
    """Project threats into `count` outputs made from the scans under `backgrounds`."""
    cfg = config or TipConfig()
    if count < 1:
        raise TipError(f"--count must be at least 1, got {count}")
    if not 0.0 <= cfg.clean_fraction <= 1.0:
        raise TipError(f"--clean-fraction must be between 0 and 1, got {cfg.clean_fraction}")
    out = Path(out)
    files = find_backgrounds(backgrounds)
    _check_out(out)
    start = time.perf_counter()
    order = np.random.default_rng(np.random.SeedSequence([seed])).permutation(len(files))
    picks = [int(order[i % len(files)]) for i in range(count)]
    used = sorted(set(picks))
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    with _staging(out) as staging, worker_pool(workers) as pool:
        analysed = pool.map(_analyse_job, [(files[k], cfg) for k in used], chunksize=1)
        infos = dict(
            zip(
                used,
                tqdm(
                    analysed, total=len(used), desc="backgrounds", unit="scan", disable=not progress
                ),
                strict=True,
            )
        )
        jobs = [
            (
                i,
                seed,
                infos[picks[i]],
                cfg,
                str(staging),
                _is_clean(i, len(files), cfg.clean_fraction),
            )
            for i in range(count)
        ]
        results = list(
            tqdm(
                pool.map(project_one, jobs, chunksize=1),
                total=count,
                desc="tip",
                unit="scan",
                disable=not progress,
            )
        )
        images, annotations = number_annotations((r["image"], r["annotations"]) for r in results)
        info = {
            "description": "CargoScan threats projected into real scans (TIP)",
            "version": "1",
            "generator": GENERATOR,
            "seed": seed,
            "count": count,
            "backgrounds": len(files),
            "background_licences": background_licences(files),
            "config": cfg.to_dict(),
        }
        write_annotations(staging, coco_document(info, CATEGORIES, images, annotations))
    instances = {
        n: sum(1 for a in annotations if a["category_id"] == i + 1)
        for i, n in enumerate(CATEGORIES)
    }
    return TipSummary(
        out,
        len(images),
        sum(1 for im in images if im["clean"]),
        instances,
        len(used),
        (time.perf_counter() - start) / count,
    )
