"""Augmentations that respect the physics, on albumentations; and the 8-bit exports
training simulates.

`Augment` turns one `training.data.Sample` into a training crop through an
albumentations `Compose`. The geometry is box-aware: `TargetedCrop` (a custom
`DualTransform`: which box the crop is cut around is ours, no albumentations crop
picks a box by weight) and `HorizontalFlip` move the boxes with the image, and
`BboxParams(min_visibility=...)` drops the boxes a crop cuts too far. The physics
are custom `ImageOnlyTransform`s. The image goes through as float32 attenuation,
(H, W, 2) high and low, never as 8-bit RGB; albumentations' colour, contrast and
blur transforms stay unused, as they have no physical meaning on attenuation.

Every draw, albumentations' own included (whether a transform applies), comes
from the generator passed to `Augment.__call__`, so a sample is the same for the
same seed in any process.

`eight_bit_export` turns a validation or test scan into what a single-energy
scanner's 8-bit JPEG export would send, with the tone curves training draws.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from inference.preprocess import ATTENUATION_SCALE, attenuation
from inference.scan import Scan
from training.data import Sample

# albumentations asks PyPI for a newer version of itself on import unless told not
# to: training machines may be offline, and a scan pipeline has no call to go out.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.geometric import functional as fgeometric


@dataclass(frozen=True)
class Augment:
    """Augmentations that keep the physics: attenuation stays attenuation.

    - flip along x (the vehicle driving the other way); never up-down (the
      source height makes the two halves of a scan differ);
    - scale (another pixel pitch or vehicle speed);
    - crop to a fixed size, most often around a threat (or around the
      sample's `focus`, a hard negative, when it has one), for speed; the model
      sees whole scans at inference;
    - residual calibration error: a small additive shift of -ln T per row;
    - extra photon noise: sigma(a) = exp(a/2)/sqrt(N) for a random flux N;
    - low-energy dropout: the low channel replaced by the high one, exactly
      as `preprocess` does for single-energy scanners;
    - 8-bit JPEG export: some of those single-energy samples pass through
      what a scanner exporting 8-bit JPEGs does (a display tone curve, coarse
      steps, saturation, 8x8 block artefacts), as the real scans we compare
      against are such files. The tone curve is unknown to the service, which
      reads grey as transmission: real exports are close to linear in
      attenuation (grey = air * (1 - a / a_max), a_max ~ 3.3 on the reference
      scans, `bench/realism.py`), so thin steel reads three times thinner and
      dense cargo saturates. Without this the model had only seen linear
      exports and fired on corner castings of real scans.
    No colour jitter, contrast or blur on attenuation: they have no physical
    meaning here.

    The albumentations pipelines are built on first use and reused; each call
    points their random state at the generator it is given, so one `Augment` must
    not serve two threads at once (DataLoader workers are processes: fine).
    """

    crop_hw: tuple[int, int] | None = (512, 512)
    flip_p: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.25)
    object_crop_p: float = 0.75
    # Weight per category (by label) of a box being the crop's target; empty = all
    # equal. Rare or hard categories (currency bundles) otherwise get few crops.
    target_weights: tuple[float, ...] = ()
    # Weight of a box as the crop's target by where it is hidden (Sample.places),
    # multiplying the category's: a bundle in a floor cavity or a package in a
    # tyre sits in clutter that uniform crops rarely show the model.
    place_weights: tuple[tuple[str, float], ...] = ()
    min_visible: float = 0.4  # share of a box that must stay in the crop to keep it
    row_gain_sigma: float = 0.01
    flux_range: tuple[float, float] = (1e4, 2e5)
    noise_p: float = 0.5
    drop_low_p: float = 0.3
    jpeg_p: float = 0.5  # share of the single-energy samples turned into an 8-bit JPEG export
    jpeg_quality: tuple[int, int] = (70, 95)
    # Export tone curves: grey = air * T^k (share `tone_power_p`), else
    # grey = air * (1 - a / a_max)^p; k, a_max and p drawn log-uniform.
    tone_power_p: float = 0.3
    tone_k: tuple[float, float] = (0.4, 1.0)
    tone_a_max: tuple[float, float] = (2.5, 6.0)
    tone_p: tuple[float, float] = (0.7, 1.4)

    def __call__(self, s: Sample, rng: np.random.Generator) -> Sample:
        boxes = np.asarray(s.boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(s.labels, np.int64)
        places = s.places or ("",) * len(labels)
        pipeline = self.pipelines[bool(s.has_low)]
        pipeline.set_random_state(rng, _Draws(rng))
        out = pipeline(
            force_apply=True,  # the Compose itself always runs (and draws nothing for it)
            # A (H, W, 2) view: the scan may be a memory-mapped cache, and TargetedCrop
            # reads only its window of it.
            image=np.asarray(s.image).transpose(1, 2, 0),
            bboxes=boxes,
            labels=labels,
            places=places,
            target_boxes=boxes,
            target_weights=self.box_weights(labels, places),
            focus=s.focus,
        )
        dropped = any(name == DropLowEnergy.__name__ for name, _ in out["applied_transforms"])
        return replace(
            s,
            image=np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32),
            boxes=np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
            labels=np.asarray(out["labels"], np.int64),
            has_low=s.has_low and not dropped,
            places=tuple(out["places"]),
            focus=None,  # it was in the scan's pixels, not the crop's
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (DataLoader workers under spawn) without the built pipelines: they
        # hold the last call's generator, and are rebuilt on first use.
        return {k: v for k, v in self.__dict__.items() if k != "pipelines"}

    @cached_property
    def pipelines(self) -> dict[bool, A.Compose]:
        """The albumentations pipelines, by whether the sample has a low channel (only
        a dual-energy scan can lose it)."""
        return {has_low: self._compose(has_low) for has_low in (True, False)}

    def _compose(self, has_low: bool) -> A.Compose:
        physics: list[Any] = [RowGain(self.row_gain_sigma)] if self.row_gain_sigma > 0 else []
        noise = PhotonNoise(self.flux_range, single_energy=not has_low, p=self.noise_p)
        physics += [noise, NonNegative()]
        if has_low:
            physics.append(
                A.Sequential(
                    [EightBitExport(self, p=self.jpeg_p), DropLowEnergy()], p=self.drop_low_p
                )
            )
        return A.Compose(
            [
                TargetedCrop(self.crop_hw, self.scale_range, self.object_crop_p),
                A.HorizontalFlip(p=self.flip_p),
                *physics,
            ],
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels", "places"],
                min_visibility=self.min_visible,
                clip=True,  # to the scan, before the crop's cut is measured
                filter_invalid_bboxes=True,
                # Measured once, at the end: after the crop only flips move boxes, and
                # a flip changes no box's visible share.
                check_each_transform=False,
            ),
            save_applied_params=True,  # tells whether DropLowEnergy ran
        )

    def box_weights(self, labels: np.ndarray, places: Sequence[str]) -> np.ndarray:
        """Each box's weight as a crop target: its category's times its place's."""
        by_place = dict(self.place_weights)
        places = places or ("",) * len(labels)
        return np.array(
            [
                (self.target_weights[int(c)] if self.target_weights else 1.0)
                * by_place.get(where, 1.0)
                for c, where in zip(labels, places, strict=True)
            ],
            np.float64,
        )

    def scan_weight(self, labels: np.ndarray, places: Sequence[str]) -> float:
        """How often a scan is drawn, relative to a clean one: the mean of its box weights.

        With the in-scan choice by weight (`TargetedCrop`) this makes each box's
        share of object crops its weight times what uniform draws give it, also
        when it is a scan's only threat; unweighted, every scan weighs 1.
        """
        return float(self.box_weights(labels, places).mean()) if len(labels) else 1.0

    def export_draws(self, rng: np.random.Generator) -> dict[str, Any]:
        """What one 8-bit export is drawn with: air level, tone curve and JPEG quality.

        The air level sits a little under full scale, as exports leave headroom.
        """
        air = float(rng.uniform(215.0, 255.0))
        if rng.random() < self.tone_power_p:
            tone: tuple[float, ...] = (_log_uniform(rng, self.tone_k),)
        else:
            tone = (_log_uniform(rng, self.tone_a_max), _log_uniform(rng, self.tone_p))
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        return {"air": air, "tone": tone, "quality": quality}

    def eight_bit_counts(self, a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The 8-bit JPEG grey levels a scanner's export shows for attenuation `a`
        (-ln T), decoded back, and the air level the export used."""
        return _export_counts(a, self.export_draws(rng))


def _export_counts(a: np.ndarray, draws: dict[str, Any]) -> tuple[np.ndarray, float]:
    """The export's grey levels for attenuation `a` under `draws` (`Augment.export_draws`):
    grey = air * T^k, or air * (1 - a / a_max)^p, in 8 bits, through JPEG and back."""
    a = np.asarray(a, np.float64)
    if len(draws["tone"]) == 1:
        grey = np.exp(-draws["tone"][0] * a)
    else:
        a_max, p = draws["tone"]
        grey = np.clip(1.0 - a / a_max, 0.0, None) ** p
    air = draws["air"]
    counts = np.clip(np.rint(grey * air), 0, 255).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, draws["quality"]]
    ok, encoded = cv2.imencode(".jpg", counts, params)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 greyscale array
        return counts, air
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE), air


class _Draws(random.Random):
    """Python's `random.Random` drawing from a numpy generator: albumentations decides
    whether a transform applies with `py_random.random() < p`, and that too must come
    from the sample's seed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        super().__init__(0)

    def random(self) -> float:
        return float(self._rng.random())

    def getrandbits(self, k: int) -> int:
        return int.from_bytes(self._rng.bytes((k + 7) // 8), "little") >> (-k % 8)


class TargetedCrop(A.DualTransform):
    """Scale, then cut a fixed-size window: around a box chosen by weight, around the
    sample's `focus` (a hard negative), or anywhere; the whole scan, scaled, when
    `crop_hw` is None.

    Reads, besides the image and boxes, the Compose's `target_boxes` ((N, 4) pixels),
    `target_weights` ((N,) each box's weight as the target) and `focus` ((4,) or None).
    Boxes are cut by albumentations; which it keeps is BboxParams' `min_visibility`.
    """

    def __init__(
        self,
        crop_hw: tuple[int, int] | None,
        scale_range: tuple[float, float],
        object_crop_p: float,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.crop_hw, self.scale_range, self.object_crop_p = crop_hw, scale_range, object_crop_p

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_hw", "scale_range", "object_crop_p")

    @property
    def targets_as_params(self) -> list[str]:
        return ["target_boxes", "target_weights"]

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        lo, hi = self.scale_range
        f = _log_uniform(rng, (lo, hi)) if hi > lo else float(lo)
        if self.crop_hw is None:
            size = (h, w) if f == 1.0 else (max(1, round(h * f)), max(1, round(w * f)))
            return {"window": (0, 0, w, h), "size": size}
        ch, cw = self.crop_hw
        boxes, target = data["target_boxes"], None
        if data.get("focus") is not None:
            target = np.asarray(data["focus"], np.float32)
        elif len(boxes) and rng.random() < self.object_crop_p:
            target = boxes[_weighted_index(data["target_weights"], rng)]
            # Zoom in no further than keeps the threat whole in the crop (a
            # person is ~350 px tall): the model sees it whole at inference.
            fit = 0.95 * min(
                ch / max(target[3] - target[1], 1.0), cw / max(target[2] - target[0], 1.0)
            )
            f = min(f, max(fit, lo))
        # The window in the scan's pixels, resampled to the crop afterwards.
        wh, ww = int(np.ceil(ch / f)), int(np.ceil(cw / f))
        if target is not None:  # anywhere that keeps it whole, if it fits
            x0 = int(np.clip(_window_start(target[0], target[2], ww, rng), 0, max(w - ww, 0)))
            y0 = int(np.clip(_window_start(target[1], target[3], wh, rng), 0, max(h - wh, 0)))
        else:
            x0 = int(rng.integers(0, max(w - ww, 0) + 1))
            y0 = int(rng.integers(0, max(h - wh, 0) + 1))
        return {"window": (x0, y0, x0 + ww, y0 + wh), "size": (ch, cw)}

    def apply_with_params(
        self, params: dict[str, Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        # albumentations makes every input contiguous before a transform sees it: for
        # a (H, W, 2) view of a memory-mapped (2, H, W) scan, a copy of all 2.4 Mpx of
        # it. Cut the window from the view instead; the rest goes the usual way.
        image = kwargs.pop("image")
        out = super().apply_with_params(params, *args, **kwargs)
        out["image"] = self.apply(image, **params)
        return out

    def apply(
        self, img: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int], **_: Any
    ) -> np.ndarray:
        x0, y0, x1, y1 = window
        part = img[y0:y1, x0:x1]
        if part.shape[:2] == (y1 - y0, x1 - x0):
            cut = np.array(part, np.float32, order="C")
        else:  # the window reaches past the scan: zero attenuation there, air
            cut = np.zeros((y1 - y0, x1 - x0, img.shape[2]), np.float32)
            cut[: part.shape[0], : part.shape[1]] = part
        # INTER_AREA when shrinking: it averages attenuation.
        shrink = size[0] * size[1] < cut.shape[0] * cut.shape[1]
        return fgeometric.resize(cut, size, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def apply_to_bboxes(
        self, bboxes: np.ndarray, window: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        # Normalised boxes: resampling the window leaves them as they are.
        return fcrops.crop_bboxes_by_coords(bboxes, window, params["shape"][:2])


class RowGain(A.ImageOnlyTransform):
    """Residual calibration error: each detector row's gain off by a factor
    1 + N(0, sigma), an additive -ln(1 + e) on its attenuation."""

    def __init__(self, sigma: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.sigma = sigma

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        e = self.sigma * self.random_generator.standard_normal((1, params["shape"][0], 1))
        shift = (-np.log1p(e) / ATTENUATION_SCALE).astype(np.float32)
        return {"shift": shift.reshape(-1, 1, 1)}

    def apply(self, img: np.ndarray, shift: np.ndarray, **_: Any) -> np.ndarray:
        return img + shift


class PhotonNoise(A.ImageOnlyTransform):
    """Fewer photons than the scan had: noise of sigma(a) = exp(a/2)/sqrt(N) on
    attenuation a, for a flux N drawn log-uniform in `flux_range`."""

    def __init__(
        self, flux_range: tuple[float, float], single_energy: bool = False, p: float = 0.5
    ) -> None:
        super().__init__(p=p)
        self.flux_range = flux_range
        # A single-energy scan's low channel is a copy of its high one, at inference too:
        # one noise draw serves both, so it stays so (independent draws taught the model
        # a low channel that never comes).
        self.single_energy = single_energy

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("flux_range", "single_energy")

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"flux": _log_uniform(self.random_generator, self.flux_range)}

    def apply(self, img: np.ndarray, flux: float, **_: Any) -> np.ndarray:
        # The unit normals are drawn here, not among the params, where albumentations
        # would keep them (float64, 2.4 MB a 384 px crop) until its next call; and
        # channel-first, the layout samples are stored in (and the hand-written
        # augmentation drew in: a seed gives the crops it gave, bit for bit). Each
        # channel is worked on its own, in place: fresh temporaries cost page faults.
        z = self.random_generator.standard_normal(
            (img.shape[-1] if img.ndim == 3 else 1, *img.shape[:2])
        )
        channels = cv2.split(img)
        single_energy = self.single_energy and len(channels) == 2
        if single_energy:  # the same draws as before, so dual-energy samples are unchanged
            channels, z = channels[:1], z[:1]
        noisy = []
        for channel, zc in zip(channels, z, strict=True):
            sigma = np.clip(channel, 0, None)  # sigma = exp(min(a, 12) / 2) / sqrt(N)
            sigma *= ATTENUATION_SCALE
            np.minimum(sigma, 12.0, out=sigma)
            sigma /= 2
            np.exp(sigma, out=sigma)
            zc *= sigma / np.sqrt(flux)  # float64, as z
            zc /= ATTENUATION_SCALE
            noisy.append(channel + zc.astype(np.float32))
        if single_energy:
            noisy = [noisy[0], noisy[0]]
        return cv2.merge(noisy).reshape(img.shape)


class NonNegative(A.ImageOnlyTransform):
    """Attenuation below zero (more photons than air) is noise: clip it."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **_: Any) -> np.ndarray:
        return np.clip(img, 0, None)


class EightBitExport(A.ImageOnlyTransform):
    """The high channel as it comes back from a scanner's 8-bit JPEG export read as
    transmission (decoding mirrors `inference.preprocess.attenuation`, T >= 1/256);
    tone curve, air level and quality drawn by `Augment.export_draws`."""

    def __init__(self, augment: Augment, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.augment = augment

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"export": self.augment.export_draws(self.random_generator)}

    def apply(self, img: np.ndarray, export: dict[str, Any], **_: Any) -> np.ndarray:
        counts, air = _export_counts(img[..., 0].astype(np.float64) * ATTENUATION_SCALE, export)
        t = np.clip(counts.astype(np.float32) / np.float32(air), 1.0 / 256.0, 1.0)
        out = img.copy()
        out[..., 0] = (-np.log(t) / ATTENUATION_SCALE).astype(np.float32)
        return out


class DropLowEnergy(A.ImageOnlyTransform):
    """Every channel replaced by the high one, exactly as `preprocess` does for a
    single-energy scanner."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **_: Any) -> np.ndarray:
        return np.repeat(img[..., :1], img.shape[-1], axis=-1)


def _weighted_index(weights: np.ndarray, rng: np.random.Generator) -> int:
    """A box drawn by its weight (uniformly when all weigh 0)."""
    w = np.asarray(weights, np.float64)
    if w.sum() <= 0:
        return int(rng.integers(len(w)))
    return int(rng.choice(len(w), p=w / w.sum()))


def _window_start(lo: float, hi: float, size: int, rng: np.random.Generator) -> float:
    """Start of a window of `size` along one axis holding [lo, hi] whole where it can."""
    if hi - lo <= size:
        return float(rng.uniform(hi - size, lo))
    return float((lo + hi) / 2 - rng.uniform(0.2, 0.8) * size)


# Seeds the simulated 8-bit export of validation/test scan k: [EIGHT_BIT_SEED, k], so the
# card's 8-bit thresholds and `cargoscan evaluate --eight-bit` see the same exports.
EIGHT_BIT_SEED = 8


def eight_bit_export(scan: Scan, rng: np.random.Generator) -> Scan:
    """The scan as a single-energy scanner's 8-bit JPEG export would send it.

    What the service is sent by such scanners (the real scans we compare against
    are such files); used to calibrate and measure the model on that input, whose
    clean scans score higher than 16-bit ones (a tone curve thins steel, JPEG
    blocks add edges). The tone curve and quality are drawn as in training.
    """
    counts, _ = Augment().eight_bit_counts(attenuation(scan.high), rng)
    return Scan(high=counts, metadata=scan.metadata)


def eight_bit_export_of(scan: Scan, index: int) -> Scan:
    """Scan `index` of a validation or test set as its 8-bit export, always the same one:
    calibration (`export`, `calibrate`) and `evaluate --eight-bit` must see the same."""
    return eight_bit_export(scan, np.random.default_rng([EIGHT_BIT_SEED, index]))


# Share of training samples shown as 16-bit single-energy scans (low channel dropped,
# no export): what `--eight-bit-share` leaves alone, so the single-energy figures hold.
SINGLE_ENERGY_16BIT_SHARE = 0.15


def single_energy_draws(eight_bit_share: float) -> tuple[float, float]:
    """(drop_low_p, jpeg_p) of `Augment` that show `eight_bit_share` of the samples as
    8-bit JPEG exports and SINGLE_ENERGY_16BIT_SHARE as 16-bit single-energy scans.

    The defaults (0.3, 0.5) are a share of 0.15; real stations that send 8-bit
    exports (all our real reference scans) may want the model to see more of them.
    """
    most = 1.0 - SINGLE_ENERGY_16BIT_SHARE
    if not 0.0 <= eight_bit_share <= most:
        raise ValueError(f"the 8-bit share must be within [0, {most:g}], got {eight_bit_share}")
    drop_low_p = SINGLE_ENERGY_16BIT_SHARE + eight_bit_share
    return drop_low_p, eight_bit_share / drop_low_p


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """A draw spread evenly in log between lo and hi: for factors (scale, flux, tone)."""
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))
