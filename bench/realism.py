"""Realism figure: how close do synthetic scans look to real scanner exports?

Not a pass/fail test. The detector is trained on synthetic scans and must work
on real ones, so we want numbers (and a picture) for the gap between the two.
How it measures (steps, pitch): docs/benchmarks.md. Real scans are never copied; the
contact sheet holds them and stays under the git-ignored out/ folder.

Run from the project root:  .venv/bin/python bench/realism.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from inference.coco import read_coco
from inference.preprocess import attenuation
from training.synth.contact_sheet import write_grid
from training.synth.dataset import worker_pool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

DEFAULT_REAL = ROOT.parent / "shared" / "real-cargo"
DEFAULT_OUT = ROOT / "out" / "bench"
JPEG_QUALITY = 90
CONTAINER_HEIGHT_MM = 2591.0  # ISO standard container, outside height
SAMPLES_PER_IMAGE = 20000  # pixels per image for the tone fit (equal weight per scan)
CANNY_LO, CANNY_HI, CANNY_SIGMA = 40, 100, 1.0
HF_SIGMA = 2.0
N_SPLITS = 50
SHEET_ROWS = 6
SHEET_HEIGHT = 220

Box = tuple[int, int, int, int]


@dataclass
class Scan8:
    """One 8-bit single-energy scan as both sets are compared."""

    name: str
    img: np.ndarray  # uint8 (H, W)
    box: Box  # container region x0, y0, x1, y1
    empty: bool | None = None  # container known empty (synthetic only)


@dataclass
class SynthRaw:
    """Synthetic high channel before tone mapping."""

    name: str
    high: np.ndarray  # uint16
    box: Box
    empty: bool | None


@dataclass
class Tone:
    """A fitted tone curve v = air_level * g(a; params)."""

    family: str
    params: dict[str, float]
    air_level: float
    w1: float
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, a: np.ndarray) -> np.ndarray:
        g = FAMILIES[self.family][0](a, *self.params.values())
        return np.clip(self.air_level * g, 0, 255)


# --------------------------------------------------------------------------- loading


def load_real(real_dir: Path) -> list[Scan8]:
    """Real JPEGs + the first YOLO box (the container body) of each."""
    scans = []
    for jpg in sorted(real_dir.rglob("*.jpg")):
        txt = jpg.with_suffix(".txt")
        img = cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE)
        if img is None or not txt.exists():
            continue
        rows = [r.split() for r in txt.read_text().splitlines() if r.strip()]
        if not rows:
            continue
        h, w = img.shape
        # Several boxes (2x20ft): the union is the container region.
        xs, ys = [], []
        for r in rows:
            cx, cy, bw, bh = map(float, r[1:5])
            xs += [(cx - bw / 2) * w, (cx + bw / 2) * w]
            ys += [(cy - bh / 2) * h, (cy + bh / 2) * h]
        box = _clip_box((round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))), w, h)
        scans.append(Scan8(jpg.stem, img, box))
    return scans


def _clip_box(box: Sequence[float], w: int, h: int) -> Box:
    x0, y0, x1, y1 = (int(v) for v in box)
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _synth_one(args: tuple[int, int]) -> SynthRaw:
    """Worker: one synthetic scan (imported here so workers stay light)."""
    from training.synth.scene import SynthConfig, generate_scan

    index, seed = args
    scan = generate_scan(index, seed, SynthConfig())
    return SynthRaw(f"synth_{index:04d}", scan.high, tuple(scan.cargo_region), _is_empty(scan.info))


def _is_empty(info: dict[str, Any]) -> bool | None:
    load = info.get("load")
    if isinstance(load, list):
        return all(x == "empty" for x in load)
    if isinstance(load, str):
        return load == "empty"
    return None


def generate_synth(count: int, seed: int, workers: int) -> list[SynthRaw]:
    """Generate in worker processes; generate_scan is a pure function of (seed, index)."""
    jobs = [(i, seed) for i in range(count)]
    with worker_pool(max(1, workers)) as pool:
        it = pool.map(_synth_one, jobs, chunksize=1)
        return list(tqdm(it, total=count, desc="synth", unit="scan"))


def load_dataset(data_dir: Path, count: int | None) -> list[SynthRaw]:
    """Read high channels + cargo regions from a COCO data set written by `cargoscan synth`."""
    images = read_coco(data_dir).images
    out = []
    for im in tqdm(images[:count] if count else images, desc="data", unit="scan"):
        high = cv2.imread(str(data_dir / im.file_name), cv2.IMREAD_UNCHANGED)
        if high is None:
            continue
        region = tuple(im.entry["cargo_region"])
        out.append(SynthRaw(Path(im.file_name).stem, high, region, _is_empty(im.entry)))
    return out


def resample(raw: SynthRaw, pitch_from: float, pitch_to: float) -> SynthRaw:
    """Resample a synthetic scan to another pixel pitch (box scaled alike)."""
    s = pitch_from / pitch_to
    h, w = raw.high.shape
    high = cv2.resize(raw.high, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    box = _clip_box([v * s for v in raw.box], high.shape[1], high.shape[0])
    return SynthRaw(raw.name, high, box, raw.empty)


# --------------------------------------------------------------------------- tone mapping


def _g_transmission(a: np.ndarray, k: float) -> np.ndarray:
    """Linear in transmission with a gamma: (I/air)^k."""
    return np.exp(-k * a)


def _g_log(a: np.ndarray, a_max: float) -> np.ndarray:
    """Linear in attenuation (log of transmission), black at a_max."""
    return 1.0 - a / a_max


def _g_log_power(a: np.ndarray, a_max: float, p: float) -> np.ndarray:
    """Log-linear with a power curve; p = 1 is the log-linear family."""
    return np.clip(1.0 - a / a_max, 0.0, None) ** p


FAMILIES: dict[str, tuple[Callable[..., np.ndarray], dict[str, np.ndarray]]] = {
    "transmission^k": (_g_transmission, {"k": np.geomspace(0.2, 4.0, 121)}),
    "log-linear": (_g_log, {"a_max": np.geomspace(0.5, 15.0, 121)}),
    "log-power": (
        _g_log_power,
        {"a_max": np.geomspace(0.5, 15.0, 41), "p": np.geomspace(0.25, 4.0, 29)},
    ),
}
QUANTS = np.linspace(0.0005, 0.9995, 1000)


EMPTY_GREY = 150  # container median above this: the median pixel sees only the walls


def _scan_samples(img: np.ndarray, box: Box, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Equal-size sample of the container region, and the region median."""
    x0, y0, x1, y1 = box
    region = img[y0:y1, x0:x1].ravel()
    return region[rng.integers(0, region.size, SAMPLES_PER_IMAGE)], float(np.median(region))


def fit_tone(real: list[Scan8], synth_a: list[tuple[np.ndarray, Box]], air_level: float) -> Tone:
    """Quantile matching: the family + parameters whose container-region grey levels
    are closest (Wasserstein-1) to the pooled real ones.

    Each scan contributes the same number of samples. The real set is mostly empty
    containers and the synthetic set mostly loaded ones, and an unweighted fit would
    bend the curve to make up for that content difference. So, for each candidate
    curve, synthetic scans are split with the same rule as the real ones (container
    median grey > EMPTY_GREY: "empty-like") and reweighted to the real share of
    empty-like scans. f is monotone, so a scan's median grey is f(median a).
    """
    rng = np.random.default_rng(0)
    real_s = [_scan_samples(s.img, s.box, rng) for s in real]
    q_real = np.quantile(np.concatenate([v for v, _ in real_s]).astype(np.float64), QUANTS)
    real_share = float(np.mean([m > EMPTY_GREY for _, m in real_s]))
    syn_s = [_scan_samples(a, box, rng) for a, box in synth_a]
    a_all = np.concatenate([v for v, _ in syn_s]).astype(np.float64)
    owner = np.repeat(np.arange(len(syn_s)), SAMPLES_PER_IMAGE)
    order = np.argsort(a_all)
    a_sorted, owner_sorted = a_all[order], owner[order]
    med_a = np.array([m for _, m in syn_s])

    def w1(fn: Callable[..., np.ndarray], params: tuple[float, ...], weighted: bool) -> float:
        w = np.ones(len(syn_s))
        if weighted:
            empty = air_level * fn(med_a, *params) > EMPTY_GREY
            if 0 < empty.sum() < len(empty):
                w = np.where(
                    empty, real_share / empty.mean(), (1 - real_share) / (1 - empty.mean())
                )
        cw = np.cumsum(w[owner_sorted])
        cw /= cw[-1]
        q_a = np.interp(QUANTS, cw, a_sorted)  # weighted quantiles of a
        v = np.sort(np.round(np.clip(air_level * fn(q_a, *params), 0, 255)))
        return float(np.mean(np.abs(v - q_real)))

    fits: dict[str, dict[str, Any]] = {}
    for weighted in (True, False):
        for name, (fn, grid) in FAMILIES.items():
            mesh = np.meshgrid(*grid.values(), indexing="ij")
            combos = list(zip(*(m.ravel() for m in mesh), strict=True))
            scores = [w1(fn, c, weighted) for c in combos]
            i = int(np.argmin(scores))
            key = name if weighted else f"{name} (unweighted)"
            fits[key] = {
                "params": {n: round(float(v), 4) for n, v in zip(grid, combos[i], strict=True)},
                "w1": round(scores[i], 3),
            }
    # Prefer fewer parameters unless the extra one buys >10 % in W1.
    ones = [n for n in FAMILIES if len(FAMILIES[n][1]) == 1]
    twos = [n for n in FAMILIES if len(FAMILIES[n][1]) > 1]
    choice = min(ones, key=lambda n: fits[n]["w1"])
    best2 = min(twos, key=lambda n: fits[n]["w1"])
    if fits[best2]["w1"] < fits[choice]["w1"] / 1.1:
        choice = best2
    return Tone(choice, fits[choice]["params"], air_level, fits[choice]["w1"], fits)


def jpeg_roundtrip(img: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Same lossy path as the real exports (block artefacts, ringing at edges)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def render(a: np.ndarray, tone: Tone) -> np.ndarray:
    return jpeg_roundtrip(np.round(tone.apply(a)).astype(np.uint8))


# --------------------------------------------------------------------------- figures


def air_slices(box: Box) -> tuple[slice, slice]:
    """Rows above the container (above the whole vehicle there), over its columns."""
    x0, y0, x1, _ = box
    return slice(1, max(y0 - 8, 6)), slice(x0, x1)


def image_figures(s: Scan8) -> dict[str, Any]:
    """Per-image figures; histograms are kept for pooling."""
    img = s.img
    h, w = img.shape
    x0, y0, x1, y1 = s.box
    f = img.astype(np.float32)
    blur = cv2.GaussianBlur(img, (0, 0), CANNY_SIGMA)
    region = (slice(y0, y1), slice(x0, x1))
    edges = cv2.Canny(blur, CANNY_LO, CANNY_HI)
    gx = cv2.Sobel(blur.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blur.astype(np.float32), cv2.CV_32F, 0, 1, ksize=3)
    grad = np.hypot(gx, gy)
    hp = f - cv2.GaussianBlur(f, (0, 0), HF_SIGMA)
    air, air_res = img[air_slices(s.box)], hp[air_slices(s.box)]
    box_img = img[region]
    return {
        "name": s.name,
        "hist": np.bincount(img.ravel(), minlength=256) / img.size,
        "hist_box": np.bincount(box_img.ravel(), minlength=256) / max(box_img.size, 1),
        "edge_density": float((edges[region] > 0).mean()),
        "grad_mean": float(grad[region].mean()),
        "hf_rms": float(np.sqrt(np.mean(hp[region] ** 2))),
        "box_w_frac": (x1 - x0) / w,
        "box_h_frac": (y1 - y0) / h,
        "box_h_px": float(y1 - y0),
        "aspect": w / h,
        "air_level": float(np.median(air)) if air.size else math.nan,
        "air_noise": float(air_res.std()) if air_res.size else math.nan,
        "box_median": float(np.median(box_img)),
        "empty": s.empty,
    }


SCALARS = {
    "edge_density": "Canny edge share in container",
    "grad_mean": "mean gradient in container",
    "hf_rms": "high-freq RMS in container",
    "box_w_frac": "container width / image width",
    "box_h_frac": "container height / image height",
    "box_h_px": "container height [px]",
    "aspect": "image aspect W/H",
    "air_level": "air grey level",
    "air_noise": "air noise (high-pass std)",
}


def w1_hist(p: np.ndarray, q: np.ndarray) -> float:
    """Earth mover's distance between two grey-level histograms (grey levels)."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum())


def _bins64(p: np.ndarray) -> np.ndarray:
    return p.reshape(64, 4).sum(axis=1)


def js_div(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits, 0..1) on 64 bins."""
    p, q = _bins64(p), _bins64(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return (kl(p) + kl(q)) / 2


def chi2(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric chi-square (0..1) on 64 bins."""
    p, q = _bins64(p), _bins64(q)
    s = p + q
    nz = s > 0
    return float(0.5 * np.sum((p[nz] - q[nz]) ** 2 / s[nz]))


def pooled(figs: list[dict[str, Any]], key: str) -> np.ndarray:
    """Each scan weighs the same in the pooled histogram."""
    return np.mean([f[key] for f in figs], axis=0)


def compare(
    a: list[dict[str, Any]], b: list[dict[str, Any]], scale: dict[str, float]
) -> dict[str, float]:
    """Distances between two sets: histogram distances and standardised mean differences."""
    out = {}
    for key, tag in (("hist", "whole"), ("hist_box", "container")):
        p, q = pooled(a, key), pooled(b, key)
        out[f"w1_{tag}"] = w1_hist(p, q)
        out[f"js_{tag}"] = js_div(p, q)
        out[f"chi2_{tag}"] = chi2(p, q)
    for key in SCALARS:
        ma = np.nanmean([f[key] for f in a])
        mb = np.nanmean([f[key] for f in b])
        out[key] = float(abs(ma - mb) / scale[key])
    return out


def baseline(real: list[dict[str, Any]], scale: dict[str, float], seed: int) -> dict[str, float]:
    """Same distances between random halves of the real set, averaged over splits."""
    rng = np.random.default_rng(seed)
    acc: dict[str, list[float]] = {}
    for _ in range(N_SPLITS):
        idx = rng.permutation(len(real))
        half = len(real) // 2
        d = compare([real[i] for i in idx[:half]], [real[i] for i in idx[half:]], scale)
        for k, v in d.items():
            acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def summary(figs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and spread of each scalar, plus mean/sd of the pooled grey levels."""
    out: dict[str, dict[str, float]] = {}
    levels = np.arange(256)
    for key, tag in (("hist", "whole"), ("hist_box", "container")):
        p = pooled(figs, key)
        mu = float((p * levels).sum())
        out[f"grey_{tag}"] = {"mean": mu, "sd": float(np.sqrt((p * (levels - mu) ** 2).sum()))}
    for key in SCALARS:
        v = np.array([f[key] for f in figs], dtype=float)
        out[key] = {
            "mean": float(np.nanmean(v)),
            "sd": float(np.nanstd(v)),
            "median": float(np.nanmedian(v)),
        }
    return out


# --------------------------------------------------------------------------- output


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def table_rows(
    s_real: dict[str, dict[str, float]] | None,
    s_syn: dict[str, dict[str, float]],
    dist: dict[str, float] | None,
    base: dict[str, float] | None,
) -> list[list[str]]:
    """One row per figure: real, synthetic, distance, real-vs-real baseline."""

    def ms(s: dict[str, dict[str, float]] | None, k: str) -> str:
        return "-" if s is None else f"{_fmt(s[k]['mean'])} ± {_fmt(s[k]['sd'])}"

    def dv(d: dict[str, float] | None, k: str) -> str:
        return "-" if d is None else _fmt(d[k])

    rows = []
    for tag in ("whole", "container"):
        g = f"grey_{tag}"
        rows.append([f"grey level, {tag} (mean ± sd)", ms(s_real, g), ms(s_syn, g), "", ""])
        rows.append(
            [f"  W1 [grey levels], {tag}", "", "", dv(dist, f"w1_{tag}"), dv(base, f"w1_{tag}")]
        )
        rows.append(
            [
                f"  Jensen-Shannon [bits], {tag}",
                "",
                "",
                dv(dist, f"js_{tag}"),
                dv(base, f"js_{tag}"),
            ]
        )
        rows.append(
            [
                f"  chi-square (sym.), {tag}",
                "",
                "",
                dv(dist, f"chi2_{tag}"),
                dv(base, f"chi2_{tag}"),
            ]
        )
    for key, label in SCALARS.items():
        rows.append([label, ms(s_real, key), ms(s_syn, key), dv(dist, key), dv(base, key)])
    return rows


def print_table(rows: list[list[str]]) -> None:
    head = ["figure", "real", "synthetic", "distance", "real-vs-real"]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(*head)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    except ImportError:
        pass
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print(line)
    for r in rows:
        print(
            "  ".join(
                (c.ljust(w) if i == 0 else c.rjust(w))
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def _labelled(img: np.ndarray, label: str, height: int) -> np.ndarray:
    """Resize to a common height and add a label strip above."""
    h, w = img.shape
    im = cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    strip = np.full((20, im.shape[1]), 255, np.uint8)
    cv2.putText(strip, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1, cv2.LINE_AA)
    return np.vstack([strip, im])


def contact_sheet(real: list[Scan8], synth: list[Scan8], path: Path, seed: int) -> None:
    """Pairs real | synthetic; each synthetic gets the unused real scan whose container
    median grey is closest, so loaded is shown next to loaded and empty next to empty."""
    rng = np.random.default_rng(seed)
    picks = [
        synth[i] for i in sorted(rng.choice(len(synth), min(SHEET_ROWS, len(synth)), replace=False))
    ]
    unused = list(range(len(real)))
    tiles = []
    for s in picks:
        x0, y0, x1, y1 = s.box
        m = np.median(s.img[y0:y1, x0:x1])
        j = min(unused, key=lambda i: abs(np.median(_container(real[i])) - m))
        unused.remove(j)
        tiles.append(_labelled(real[j].img, f"REAL {real[j].name}", SHEET_HEIGHT))
        tiles.append(_labelled(s.img, f"SYNTHETIC {s.name}", SHEET_HEIGHT))
    write_grid([cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) for t in tiles], 2, path)


def _container(scan: Scan8) -> np.ndarray:
    x0, y0, x1, y1 = scan.box
    return scan.img[y0:y1, x0:x1]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if k not in ("hist", "hist_box")}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return round(float(x), 5) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--count", type=int, default=None, help="synthetic scans (default 24; with --data: all)"
    )
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--data", type=Path, help="read a `cargoscan synth` data set instead of generating"
    )
    p.add_argument(
        "--real",
        type=Path,
        default=DEFAULT_REAL,
        help="real reference scans (default ../shared/real-cargo)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where the contact sheet and JSON go (keep it git-ignored)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--pitch-mm",
        type=float,
        default=None,
        help="resample synthetic to this pitch (default: keep 5 mm)",
    )
    return p.parse_args(argv)


def load_synth(args: argparse.Namespace) -> tuple[list[SynthRaw], str, float]:
    """Synthetic scans (generated or read), optionally resampled to another pitch."""
    from training.synth.scene import SynthConfig

    pitch = SynthConfig().pitch_mm
    if args.data:
        raws, src = load_dataset(args.data, args.count), str(args.data)
    else:
        raws = generate_synth(args.count or 24, args.seed, args.workers)
        src = f"generate_scan seed={args.seed} count={len(raws)}"
    if args.pitch_mm:
        raws = [resample(r, pitch, args.pitch_mm) for r in raws]
        pitch = args.pitch_mm
    return raws, src, pitch


def real_figures(
    args: argparse.Namespace, real: list[Scan8], f_syn: list[dict[str, Any]], tone: Tone
) -> dict[str, Any]:
    """Real summary, distances, real-vs-real baseline, and the empty-container check."""
    f_real = [image_figures(s) for s in real]
    s_real = summary(f_real)
    scale = {k: (s_real[k]["sd"] or 1.0) for k in SCALARS}
    real_pitch = CONTAINER_HEIGHT_MM / s_real["box_h_px"]["mean"]
    fits = "\n    ".join(f"{n}: {v['params']} W1={v['w1']}" for n, v in tone.fits.items())
    print(f"  fits (container-region quantile match, W1 in grey levels):\n    {fits}")
    print(f"real: {len(real)} scans from {args.real}")
    print(f"  pitch ~{real_pitch:.2f} mm (2591 mm container / mean box height) vs synthetic 5 mm")
    empty_real = [f["box_median"] for f in f_real if f["box_median"] > EMPTY_GREY]
    empty_syn = [f["box_median"] for f in f_syn if f["empty"]]
    check = {
        "real_empty_like_median": float(np.median(empty_real)) if empty_real else None,
        "synthetic_empty_median": float(np.median(empty_syn)) if empty_syn else None,
    }
    print(
        f"  check, median grey inside empty containers: real (box median > {EMPTY_GREY}, "
        f"n={len(empty_real)}) {_fmt(check['real_empty_like_median'] or math.nan)}, "
        f"synthetic (load 'empty', n={len(empty_syn)}) "
        f"{_fmt(check['synthetic_empty_median'] or math.nan)}"
    )
    return {
        "real_dir": str(args.real),
        "real_count": len(real),
        "real_pitch_mm_est": real_pitch,
        "real": s_real,
        "distance": compare(f_real, f_syn, scale),
        "real_vs_real": baseline(f_real, scale, args.seed),
        "empty_container_check": check,
        "real_images": f_real,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raws, src, synth_pitch = load_synth(args)
    # The product's own air calibration, so the bench sees what the model sees.
    synth_a = [(attenuation(r.high), r.box) for r in raws]
    real = load_real(args.real) if args.real.is_dir() else []
    if real:
        # White point = the real air level; curve fitted to the real container greys.
        air_level = float(np.median([np.median(s.img[air_slices(s.box)]) for s in real]))
        tone = fit_tone(real, synth_a, air_level)
    else:
        print(f"real scans not found under {args.real}: synthetic-only figures")
        print("  no tone fit possible: plain linear transmission, air -> 254")
        tone = Tone("transmission^k", {"k": 1.0}, 254.0, math.nan)
    synth = [
        Scan8(r.name, render(a, tone), r.box, r.empty)
        for r, (a, _) in zip(raws, synth_a, strict=True)
    ]
    f_syn = [image_figures(s) for s in synth]
    s_syn = summary(f_syn)
    result: dict[str, Any] = {
        "synthetic_source": src,
        "synthetic_pitch_mm": synth_pitch,
        "tone": {
            "family": tone.family,
            "params": tone.params,
            "air_level": tone.air_level,
            "w1_fit": tone.w1,
            "all_fits": tone.fits,
            "jpeg_quality": JPEG_QUALITY,
        },
        "synthetic": s_syn,
        "synthetic_images": f_syn,
    }
    print(f"\nsynthetic: {len(synth)} scans ({src}), pitch {synth_pitch:g} mm")
    print(f"tone mapping: v = {tone.air_level:g} * g(a), a = -ln(I/air_row), JPEG q{JPEG_QUALITY}")
    print(f"  chosen: {tone.family} {tone.params}")
    if real:
        result.update(real_figures(args, real, f_syn, tone))
        print("distances: histograms as named; scalar rows: |mean difference| / real sd")
        print(f"real-vs-real: random halves of the real set, mean over {N_SPLITS} splits")
    print()
    s_real = result.get("real")
    print_table(table_rows(s_real, s_syn, result.get("distance"), result.get("real_vs_real")))
    noise = f"synthetic {_fmt(s_syn['air_noise']['median'])}"
    if s_real:
        noise = f"real {_fmt(s_real['air_noise']['median'])}, " + noise
    print(f"air noise medians (a few real scans come from a noisier scanner): {noise}")

    args.out.mkdir(parents=True, exist_ok=True)
    if real:
        sheet = args.out / "realism_contact_sheet.png"
        contact_sheet(real, synth, sheet, args.seed)
        print(f"\ncontact sheet (contains real scans: never commit it): {sheet}")
    js = args.out / "realism.json"
    js.write_text(json.dumps(_jsonable(result), indent=1))
    print(f"figures: {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
