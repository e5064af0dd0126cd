"""`cargoscan train`: run folder, checkpoints that rebuild the network, resume, DDP with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cargoscan.cli import main
from inference import DEFAULT_MODEL
from training.model import CargoNet, ModelConfig
from training.synth.dataset import write_dataset
from training.train import (
    TrainConfig,
    WeightAverage,
    autocast_dtype,
    load_checkpoint,
    train,
)

TINY = ["--epochs", "2", "--steps", "2", "--batch", "2", "--crop", "128"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train_data")
    write_dataset(out, count=3, seed=31, workers=1, progress=False)
    return out


def test_train_writes_config_metrics_and_checkpoints_then_resumes(synth: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["train", "--data", str(synth), "--val", str(synth), "--out", str(run), *TINY]
    places = {
        a["concealment"]
        for a in json.loads((synth / "annotations.json").read_text())["annotations"]
    }
    place = sorted(places)[0]
    args += ["--crop-weight", "currency=3", "--crop-weight-place", f"{place}=4"]
    args += ["--eight-bit-share", "0.4"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["eight_bit_share"] == 0.4
    assert config["data"] == [str(synth)] and config["epochs"] == 2
    assert config["crop_weights"] == {"currency": 3.0}
    assert config["place_weights"] == {place: 4.0}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(r["train"]["total"] > 0 for r in lines)
    assert "mean_detection_rate" in lines[-1]["val"]
    net, ck = load_checkpoint(run / "best.pt")
    assert list(net.config.categories) == ck["model_config"]["categories"]
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 64, 64))["heat"].shape[1] == 5
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and "optimizer" in last
    assert last["ema_updates"] == 4  # 2 epochs x 2 steps: the average followed every step

    # Resume: a third epoch continues the run instead of starting again.
    resumed = list(args)
    resumed[resumed.index("--epochs") + 1] = "3"
    assert main([*resumed, "--resume"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert torch.load(run / "last.pt", weights_only=True)["ema_updates"] == 6


def test_weight_average_follows_early_steps_closely_and_later_ones_slowly():
    net = CargoNet(ModelConfig(widths=(8, 8, 8, 8, 8), neck_width=8))
    average = WeightAverage(net, decay=0.999)
    start = net.heat.out.bias.detach().clone()
    with torch.no_grad():
        net.heat.out.bias += 1.0
    average.update(net)  # decay ramps from 0: the first step is taken almost whole
    moved = average.net.heat.out.bias - start
    assert torch.all(moved > 0.99)
    average.updates = 100_000  # late in a run: one step moves the average by ~0.1 %
    with torch.no_grad():
        net.heat.out.bias += 1.0
    before = average.net.heat.out.bias.clone()
    average.update(net)
    step = average.net.heat.out.bias - before
    assert torch.all((step > 0.0005) & (step < 0.002))
    assert average.net.heat.out.bias.requires_grad is False


def test_train_rejects_a_folder_that_is_no_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "neither a COCO folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("weight", "message"),
    [("currency=-1", "CATEGORY=W with W >= 0"), ("currency", "CATEGORY=W"), ("gold=2", "'gold'")],
)
def test_train_rejects_a_bad_crop_weight(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], weight: str, message: str
):
    args = ["train", "--data", str(synth), "--out", str(tmp_path / "r"), *TINY]
    assert main([*args, "--crop-weight", weight]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("weight", "message"),
    [("tyre=x", "PLACE=W with W >= 0"), ("=2", "PLACE=W"), ("attic=2", "'attic'")],
)
def test_train_rejects_a_bad_place_weight(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], weight: str, message: str
):
    # A place no training annotation has would silently do nothing: refused, with
    # the places the data does have.
    args = ["train", "--data", str(synth), "--out", str(tmp_path / "r"), *TINY]
    assert main([*args, "--crop-weight-place", weight]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("share", ["0.9", "-0.1"])
def test_train_rejects_an_eight_bit_share_it_cannot_draw(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], share: str
):
    # Above 0.85 the 16-bit single-energy samples the single-energy figures rely on would go.
    args = ["train", "--data", str(synth), "--out", str(tmp_path / "r"), *TINY]
    assert main([*args, "--eight-bit-share", share]) == 2
    assert "8-bit share must be within [0, 0.85]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_time_budget_ends_the_run_after_the_step_and_says_so(synth: Path, tmp_path: Path):
    # bf16 autocast on the CPU takes the mixed-precision path a GPU takes (loss in float32).
    cfg = TrainConfig(
        data=[str(synth)], out=str(tmp_path / "run"), epochs=4, steps_per_epoch=50,
        batch_size=2, crop=64, time_budget_s=1e-3, precision="bf16",
    )  # fmt: skip
    train(cfg, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1  # one epoch of four, one step of fifty: the budget was spent
    budget = lines[0]["time_budget"]
    assert budget["spent"] and budget["steps"] == 1 and budget["elapsed_s"] >= 0
    assert lines[0]["train"]["total"] > 0
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["elapsed_s"] >= 1e-3 and last["ema_updates"] == 1
    # The spent time travels in last.pt: resuming adds no epoch.
    train(cfg, resume=True, progress=False)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_bf16_channels_last_training_from_the_command_line_saves_a_usable_network(
    synth: Path, tmp_path: Path
):
    # The CPU's fast training mode (bench/train_throughput.py): NHWC weights in training
    # must not leak into the checkpoint as anything a plain network cannot load and run.
    run = tmp_path / "nhwc"
    args = ["train", "--data", str(synth), "--out", str(run), *TINY]
    assert main([*args, "--precision", "bf16", "--channels-last"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["precision"] == "bf16" and cfg["channels_last"] is True
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(0 < x["train"]["total"] < 1e3 for x in lines)
    net, _ = load_checkpoint(run / "last.pt")
    out = net.eval()(torch.rand(1, 2, 64, 96))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_precision_names_the_autocast_type_and_refuses_fp16_on_a_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="fp32, bf16, fp16 or auto"):
        autocast_dtype("half", cpu)


@pytest.mark.slow
def test_distributed_training_runs_on_cpu_with_two_gloo_processes(synth: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
        "-m", "training", "train", "--data", str(synth), "--out", str(run), *TINY,
        "--init", str(DEFAULT_MODEL), "--hard-negative-share", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone writes
    # Each rank mined its share of the three scans; the pool joins both shares.
    assert all(json.loads(line)["hard_negatives"]["mined_scans"] == 3 for line in lines)
    assert (run / "last.pt").is_file()
