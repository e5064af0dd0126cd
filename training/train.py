"""The training loop: `cargoscan train`, also under `torchrun -m training train` (DDP).

Every run folder holds `config.json` (what was asked), `metrics.jsonl` (one
line per epoch), `last.pt` (to resume after a kill) and `best.pt` (the best
validation epoch). Checkpoints are state dicts plus the configs as plain data:
no pickled modules. Under torchrun each process trains on its own share of
every epoch's draws (a DistributedSampler in effect) and rank 0 alone
validates and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.augment import Augment, single_energy_draws
from training.data import MixedScans, Sample, ScanSource, open_source, summarize
from training.hard_negatives import (
    HardNegativePool,
    mine,
    onnx_findings,
    scans_to_mine,
    whole_scan_findings,
)
from training.metrics import ScanFindings, detection_rate_at_far
from training.model import CargoNet, ExportWrapper, ModelConfig
from training.objective import loss, make_targets
from training.warm_start import (
    config_of,
    describe,
    float_model_of,
    grow,
    grown_config,
    warm_start,
)

VAL_FAR = 0.01


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    weights: list[float] = field(default_factory=list)  # one per data set; default all 1
    val: str | None = None  # a held-out COCO/YOLO folder; None = no validation
    epochs: int = 30
    steps_per_epoch: int = 200
    batch_size: int = 8
    crop: int = 512
    # Category name -> weight of its boxes as crop targets (absent: 1).
    crop_weights: dict[str, float] = field(default_factory=dict)
    # Hiding place (COCO `concealment`) -> weight of its boxes as crop targets,
    # multiplying the category's (absent: 1).
    place_weights: dict[str, float] = field(default_factory=dict)
    # Share of samples shown as a single-energy scanner's 8-bit JPEG export
    # (`training.augment.single_energy_draws`); 0.15 is what runs before the flag had.
    eight_bit_share: float = 0.15
    # Share of crops cut around hard negatives: regions where the model fires on no
    # threat, mined before each epoch on `hard_negative_scans` training scans
    # (`training.hard_negatives`); 0 = none, and no mining.
    hard_negative_share: float = 0.0
    hard_negative_scans: int = 300
    hard_negative_min_score: float = 0.1
    hard_negatives_per_scan: int = 3
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loader_workers: int = 0
    # Gradient-norm clipping: typical norms here are 5-10, with rare spikes to 30 on
    # batches with few small threats, which upset the anomaly head without it.
    clip_grad_norm: float = 10.0
    # Exponential moving average of the weights (what is validated and exported):
    # with batches of 8 crops the raw weights jitter from step to step, and the
    # detection rate at 1 % false alarms hangs on the few highest clean-scan peaks.
    ema_decay: float = 0.999
    cache: bool = True  # keep pre-processed scans in DATA/.cache (float16, memory-mapped)
    # Start from this model's weights (a checkpoint or an exported .onnx with its card);
    # the network's configuration then comes from it.
    init: str | None = None
    # Residual blocks per stage (strides 2-32). With `init`: at least that model's;
    # the extra blocks start as identities (`training.warm_start.grow`).
    blocks: list[int] | None = None
    model: dict[str, Any] = field(default_factory=lambda: ModelConfig().to_dict())
    # Arithmetic of the forward pass: "fp32", "bf16", "fp16" (CUDA only, with a gradient
    # scaler) or "auto" (bf16 on a GPU that has it, else fp16 on a GPU, fp32 on a CPU).
    # Half-precision convolutions run on a GPU's tensor cores; the loss stays float32.
    precision: str = "fp32"
    # Activations and weights in NHWC ("channels last"). On this CPU (AVX-512 BF16) it is
    # what lets bf16 convolutions use oneDNN's fast kernels: bf16 alone 1.4x, with
    # channels last 2.0x the float32 training steps/s (bench/train_throughput.py).
    channels_last: bool = False
    # Seconds of training (the epoch loop, summed over resumes) after which the run ends,
    # after the step in progress, with that epoch validated and saved as usual and its
    # metrics line saying so: for a GPU slot of fixed length. The learning rate's warm-up
    # (5 %) and cosine then run over this time instead of the steps. One process only.
    time_budget_s: float | None = None
    # Quantisation-aware fine-tuning (`training.qat`): the int8 file `cargoscan quantize`
    # made from `init`; its activations are fake-quantised on that file's grids, and batch
    # norm is frozen as int8 folds it. Export, then `quantize --activations-from` it.
    qat: str | None = None


class EpochDraws(Dataset):
    """One epoch: weighted draws from the sources, augmented; this rank's share only.

    `focus` (N, 4), NaN where none: a region to crop draw k around (a hard negative).
    """

    def __init__(
        self,
        source: MixedScans,
        augment: Augment,
        indices: np.ndarray,
        seed: int,
        focus: np.ndarray | None = None,
    ) -> None:
        self.source, self.augment, self.indices, self.seed = source, augment, indices, seed
        self.focus = focus

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Sample:
        rng = np.random.default_rng([self.seed, int(k)])
        sample = self.source[int(self.indices[k])]
        if self.focus is not None and np.isfinite(self.focus[k]).all():
            sample = replace(sample, focus=self.focus[k])
        return self.augment(sample, rng)


def collate(samples: list[Sample]) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    return images, [s.boxes for s in samples], [s.labels for s in samples]


@torch.no_grad()
def validate(net: CargoNet, source: ScanSource, device: torch.device) -> dict[str, Any]:
    """Whole scans through the exported graph's maths: detection rate at 1 % false alarms."""
    was_training = net.training
    wrapper = ExportWrapper(net)
    scans = []
    for k in range(len(source)):
        s = source[k]
        boxes, scores, labels = whole_scan_findings(wrapper, s.image, device)
        scans.append(ScanFindings(boxes, scores, labels, s.boxes, s.labels))
    net.train(was_training)
    out: dict[str, Any] = {"categories": {}}
    rates = []
    if any(s.clean for s in scans):
        for c, name in enumerate(source.categories):
            r, t = detection_rate_at_far(scans, c, [VAL_FAR])
            # None, not NaN, for a category with no instance here: metrics.jsonl stays JSON.
            rate = None if math.isnan(r[VAL_FAR]) else r[VAL_FAR]
            out["categories"][name] = {"detection_rate": rate, "threshold": t[VAL_FAR]}
            if rate is not None:
                rates.append(rate)
    out["mean_detection_rate"] = float(np.mean(rates)) if rates else None
    return out


class WeightAverage:
    """Exponential moving average of a network's parameters and batch-norm statistics.

    The decay ramps up from 0 (tau = 2,000 steps, as in YOLOv5), so early in a run
    the average follows the raw weights instead of remembering the random start.
    """

    def __init__(self, net: CargoNet, decay: float, updates: int = 0) -> None:
        self.net = CargoNet(net.config).to(next(net.parameters()).device)
        self.net.load_state_dict(net.state_dict())
        self.net.eval().requires_grad_(False)
        self.decay, self.updates = decay, updates

    @torch.no_grad()
    def update(self, net: CargoNet) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / 2000.0))
        for avg, cur in zip(self.net.state_dict().values(), net.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(cur.detach(), alpha=1.0 - d)
            else:
                avg.copy_(cur)


def _save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the run folder."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    resuming = resume and (out / "last.pt").is_file()
    if cfg.init:  # an int8 model: its float file (named in its card)
        cfg.init = str(float_model_of(cfg.init))
    init_cfg = config_of(cfg.init) if cfg.init else None
    if init_cfg is not None:
        cfg.model = (grown_config(init_cfg, cfg.blocks) if cfg.blocks else init_cfg).to_dict()
    elif cfg.blocks:  # a fresh network: any depth
        fresh = ModelConfig.from_dict(cfg.model)
        if len(cfg.blocks) != len(fresh.blocks) or min(cfg.blocks) < 0:
            raise ValueError(f"--blocks wants {len(fresh.blocks)} counts >= 0, got {cfg.blocks}")
        cfg.model = replace(fresh, blocks=tuple(cfg.blocks)).to_dict()
    model_cfg = ModelConfig.from_dict(cfg.model)
    categories = list(model_cfg.categories)
    weights = cfg.weights or [1.0] * len(cfg.data)
    if len(weights) != len(cfg.data):
        raise ValueError(f"{len(weights)} weights for {len(cfg.data)} data sets")
    source = MixedScans(
        [(open_source(d, categories, cfg.cache), w) for d, w in zip(cfg.data, weights, strict=True)]
    )
    val = open_source(cfg.val, categories, cfg.cache) if cfg.val else None
    data_summary = [{**summarize(p), "weight": w} for p, w in source.parts]
    torch.manual_seed(cfg.seed)
    net = CargoNet(model_cfg).to(device)
    unknown = sorted(set(cfg.crop_weights) - set(categories))
    if unknown:
        raise ValueError(
            f"crop weights for unknown categories {unknown}; the model has {categories}"
        )
    seen_places = {p for part in data_summary for p in part.get("concealments", {})}
    unseen = sorted(set(cfg.place_weights) - seen_places)
    if unseen:
        raise ValueError(
            f"crop weights for hiding places {unseen} that no training annotation has; "
            f"the data's places are {sorted(seen_places) or 'none (no concealment field)'}"
        )
    drop_low_p, jpeg_p = single_energy_draws(cfg.eight_bit_share)
    if not 0.0 <= cfg.hard_negative_share < 1.0:
        raise ValueError(
            f"hard-negative share must be within [0, 1), got {cfg.hard_negative_share}"
        )
    if not 0.0 <= cfg.hard_negative_min_score < 1.0:
        raise ValueError(
            f"hard-negative min score must be within [0, 1), got {cfg.hard_negative_min_score}"
        )
    if cfg.hard_negative_scans < 1:
        raise ValueError(f"hard-negative scans must be at least 1, got {cfg.hard_negative_scans}")
    amp_dtype = autocast_dtype(cfg.precision, device)
    budget = cfg.time_budget_s
    if budget is not None and (world > 1 or not budget > 0):
        raise ValueError(f"a time budget needs one process and seconds > 0, got {budget}")
    augment = Augment(
        crop_hw=(cfg.crop, cfg.crop),
        drop_low_p=drop_low_p,
        jpeg_p=jpeg_p,
        target_weights=tuple(cfg.crop_weights.get(c, 1.0) for c in categories)
        if cfg.crop_weights
        else (),
        place_weights=tuple(sorted(cfg.place_weights.items())),
    )
    init_record = describe(cfg.init) if cfg.init else None
    if cfg.init and init_cfg is not None and not resuming:
        if init_cfg == model_cfg:
            warm_start(net, cfg.init, _init_samples(source, augment, cfg))
        else:
            smaller = CargoNet(init_cfg).to(device)
            warm_start(smaller, cfg.init, _init_samples(source, augment, cfg))
            grow(net, smaller)
        net.to(device)
    qat_record = _attach_qat(net, cfg, source, init_cfg == model_cfg, resuming) if cfg.qat else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(cfg.epochs * cfg.steps_per_epoch, 1)
    warmup = max(total // 20, 1)

    spent_before, started = 0.0, time.monotonic()

    def spent() -> float:
        """Seconds of training so far, earlier sessions of a resumed run included."""
        return spent_before + time.monotonic() - started

    def schedule(step: int) -> float:
        # Linear warm-up, then cosine to 2 % of the peak. A function of the step
        # and the current total, so a resumed run with more epochs stretches on;
        # with a time budget, of the share of it spent instead.
        if budget is not None:
            t = min(spent() / budget, 1.0)
            if t < 0.05:
                return 0.02 + 0.98 * t / 0.05
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (t - 0.05) / 0.95))
        if step < warmup:
            return (step + 1) / warmup
        t = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start, best = 0, -math.inf
    average: WeightAverage | None = None
    pool = HardNegativePool.empty()
    # A gradient scaler keeps fp16 gradients from underflowing; disabled it passes through.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if resuming:
        ck = torch.load(out / "last.pt", map_location=device, weights_only=True)
        # "model" holds the weights to use (the average when there is one);
        # "raw_model" the optimiser's own weights, to go on training from.
        net.load_state_dict(ck.get("raw_model", ck["model"]))
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, best = int(ck["epoch"]) + 1, float(ck["best"])
        if cfg.ema_decay > 0:
            average = WeightAverage(net, cfg.ema_decay, int(ck.get("ema_updates", 0)))
            average.net.load_state_dict(ck["model"])
        if "hard_negatives" in ck:
            pool = HardNegativePool.from_state(ck["hard_negatives"])
        if "scaler" in ck and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
        spent_before = float(ck.get("elapsed_s", 0.0))
    elif cfg.ema_decay > 0:
        average = WeightAverage(net, cfg.ema_decay)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    started = time.monotonic()
    for epoch in range(start, cfg.epochs):
        if budget is not None and spent() >= budget:
            break
        mined = 0
        if cfg.hard_negative_share > 0:
            picked = scans_to_mine(len(source), cfg.hard_negative_scans, epoch, cfg.seed)
            found = mine(
                onnx_findings(average.net if average is not None else net),
                source,
                picked[rank::world],
                cfg.hard_negative_min_score,
                cfg.hard_negatives_per_scan,
                progress=progress and rank == 0,
            )
            if world > 1:  # every rank draws from the same pool
                shares: list[Any] = [None] * world
                dist.all_gather_object(shares, found)
                found = {k: v for share in shares for k, v in share.items()}
            for index, regions in found.items():
                pool.update(index, regions)
            mined = len(picked)
        draws = source.epoch_indices(
            cfg.steps_per_epoch * cfg.batch_size * world,
            np.random.default_rng([cfg.seed, epoch]),
            augment.scan_weight if cfg.crop_weights or cfg.place_weights else None,
        )
        focus, hard_crops = _hard_negative_draws(draws, pool, cfg, epoch)
        data = EpochDraws(
            source,
            augment,
            draws[rank::world],
            seed=cfg.seed * 1_000_003 + epoch * world + rank,
            focus=None if focus is None else focus[rank::world],
        )
        loader = DataLoader(
            data,
            batch_size=cfg.batch_size,
            collate_fn=collate,
            num_workers=cfg.loader_workers,
            pin_memory=device.type == "cuda",
        )
        sums: dict[str, float] = {}
        steps, out_of_time = 0, False
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or rank != 0
        )
        for images, boxes, labels in bar:
            targets = make_targets(boxes, labels, len(categories), tuple(images.shape[-2:]))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images.to(device, memory_format=memory_format, non_blocking=True))
            # The loss in float32: its clamps (1e-4 from 0 and 1) vanish in half precision.
            terms = loss({k: v.float() for k, v in outputs.items()}, _to(targets, device))
            opt.zero_grad()
            scaler.scale(terms["total"]).backward()
            if cfg.clip_grad_norm > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if average is not None:
                average.update(net)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{terms['total'].item():.3f}")
            steps += 1
            if budget is not None and spent() >= budget:
                out_of_time = True
                break
        if rank != 0:
            continue
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0]}
        record["train"] = {k: v / max(steps, 1) for k, v in sums.items()}
        if budget is not None:
            record["time_budget"] = {"budget_s": budget, "steps": steps, "spent": out_of_time}
        if cfg.hard_negative_share > 0:
            record["hard_negatives"] = {
                "mined_scans": mined,
                "crops": hard_crops,
                "pool": pool.summary(categories),
            }
        score = -record["train"]["total"]
        final = average.net if average is not None else net
        if val is not None:
            record["val"] = validate(final, val, device)
            if record["val"]["mean_detection_rate"] is not None:
                score = record["val"]["mean_detection_rate"]
        if budget is not None:
            record["time_budget"]["elapsed_s"] = round(spent(), 1)
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        state = {
            "model": final.state_dict(),
            "raw_model": net.state_dict(),
            "ema_updates": average.updates if average is not None else 0,
            "model_config": model_cfg.to_dict(),
            "train_config": asdict(cfg),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "data_summary": data_summary,
            "init": init_record,
            "qat": qat_record,
            "best": max(best, score),
            "metrics": record,
            "hard_negatives": pool.state(),
            "elapsed_s": spent(),
        }
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        if score > best:
            best = score
            _save(
                {
                    k: state[k]
                    for k in (
                        "model",
                        "model_config",
                        "train_config",
                        "epoch",
                        "metrics",
                        "data_summary",
                        "init",
                    )
                },
                out / "best.pt",
            )
        _save(state, out / "last.pt")
        if out_of_time:
            break
    if world > 1:
        dist.barrier()
    return out


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type `TrainConfig.precision` asks for on `device`; None: float32."""
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16" and cuda:
        return torch.float16
    if precision == "fp16":
        raise ValueError("fp16 training needs a CUDA device (on a CPU use bf16 or fp32)")
    raise ValueError(f"precision must be fp32, bf16, fp16 or auto, got {precision!r}")


def _hard_negative_draws(
    draws: np.ndarray, pool: HardNegativePool, cfg: TrainConfig, epoch: int
) -> tuple[np.ndarray | None, int]:
    """Turn a `hard_negative_share` of the epoch's draws (in place) into crops around
    pool regions: their scan indices go into `draws`, their regions into the
    returned focus array (NaN rows: an ordinary draw); and how many there are."""
    if cfg.hard_negative_share <= 0 or len(pool) == 0:
        return None, 0
    rng = np.random.default_rng([cfg.seed, epoch, 13])
    chosen = np.flatnonzero(rng.random(len(draws)) < cfg.hard_negative_share)
    indices, regions = pool.draw(len(chosen), rng)
    draws[chosen] = indices
    focus = np.full((len(draws), 4), np.nan, np.float32)
    focus[chosen] = regions
    return focus, len(chosen)


def _init_samples(source: MixedScans, augment: Augment, cfg: TrainConfig) -> list[torch.Tensor]:
    """A few batches of training crops for a warm start's batch-norm statistics."""
    count = 4 * cfg.batch_size
    # Seeds apart from every epoch's ([seed, epoch]): these crops are drawn before epoch 0.
    draws = source.epoch_indices(count, np.random.default_rng([cfg.seed, 7, 7]))
    data = EpochDraws(source, augment, draws, seed=cfg.seed * 1_000_003 + 999_983)
    images = [torch.from_numpy(data[k].image) for k in range(len(data))]
    return [torch.stack(images[k : k + cfg.batch_size]) for k in range(0, count, cfg.batch_size)]


def _attach_qat(
    net: CargoNet, cfg: TrainConfig, source: MixedScans, same_config: bool, resuming: bool
) -> dict[str, Any]:
    """Fake-quantise `net` (just warm-started from `cfg.init`) on `cfg.qat`'s grids."""
    from training.qat import attach_fake_quant, freeze_batch_norm

    if not cfg.init or not str(cfg.init).endswith(".onnx") or not same_config:
        raise ValueError("--qat fine-tunes the float .onnx given as --init, without --blocks")
    if resuming or cfg.hard_negative_share > 0:
        raise ValueError("--qat runs start afresh (no --resume) and mine no hard negatives")
    # Tensors are matched by value, so the sample needs content: the middle of a scan.
    image = source[0].image
    h, w = (min(n, cap) // 32 * 32 for n, cap in zip(image.shape[1:], (512, 1536), strict=True))
    top, left = (image.shape[1] - h) // 2, (image.shape[2] - w) // 2
    sample = image[:, top : top + h, left : left + w]
    record = attach_fake_quant(net, cfg.init, cfg.qat, sample)
    freeze_batch_norm(net)
    if record["matched"] < record["activations"] // 2:
        raise ValueError(
            f"--qat: only {record['matched']} of {record['activations']} quantised activations "
            f"found in the network: is {cfg.qat} made from {cfg.init}?"
        )
    return {k: record[k] for k in ("activations", "matched", "unmatched")}


def _to(t: Any, device: torch.device) -> Any:
    """Targets onto the device (a dataclass of tensors)."""
    return type(t)(*(getattr(t, f).to(device) for f in t.__dataclass_fields__))


def load_checkpoint(path: Path | str) -> tuple[CargoNet, dict[str, Any]]:
    """Rebuild the network from a checkpoint: state dict + config, no pickled code."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    net = CargoNet(ModelConfig.from_dict(ck["model_config"]))
    net.load_state_dict(ck["model"])
    return net.eval(), ck
