"""The benchmark's report: one table (both models, the same rows) as markdown and JSON,
and the training curves as a picture, so it shows who learns faster, not only who ends
higher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELS = ("CargoNet", "YOLOv8n")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def present(report: dict[str, Any]) -> list[str]:
    """The models a report holds, in table order (one, for half of a split run)."""
    return [m for m in MODELS if m in report["models"]]


def table(report: dict[str, Any]) -> str:
    """The markdown table: training, then each test set, the clean scans, the speed."""
    runs = report["models"]
    names = present(report)
    blank = ("",) * len(names)
    rows: list[tuple[str, ...]] = []

    def row(label: str, fn: Any) -> None:
        rows.append((label, *(fn(runs[m]) for m in names)))

    row("training budget (wall clock)", lambda r: f"{r['training']['minutes']:g} min")
    row("epochs, crops seen, optimiser steps", lambda r: r["training"]["done"])
    row("ONNX file", lambda r: f"{r['onnx_mb']:.1f} MB")
    for k, test in enumerate(report["tests"]):
        name = f"test {k + 1} ({Path(test).name})"
        first = runs[names[0]]["tests"][k]
        rows.append(
            (f"**{name}**: {first['scans']} scans, {first['clean_scans']} clean, "
             f"{first['threat_instances']} threats", *blank)
        )  # fmt: skip
        row(
            "scan detection at 1 % false alarms",
            lambda r, k=k: _pct(r["tests"][k]["scan_detection_rate"]),
        )
        row(
            "scan false alarms reached", lambda r, k=k: _pct(r["tests"][k]["scan_false_alarm_rate"])
        )
        row("mAP50", lambda r, k=k: _num(r["tests"][k]["map50"]))
        for cat in first["categories"]:
            row(
                f"{cat}: detection at 1 % / AP50",
                lambda r, k=k, cat=cat: (
                    f"{_pct(r['tests'][k]['categories'][cat]['detection_rate'])} / "
                    f"{_num(r['tests'][k]['categories'][cat]['ap50'], '.2f')}"
                ),
            )
        row("ms per scan, median (mean)", lambda r, k=k: (
            f"{_num(r['tests'][k]['ms_per_scan']['median'], '.0f')} "
            f"({_num(r['tests'][k]['ms_per_scan']['mean'], '.0f')})"
        ))  # fmt: skip
    if report.get("clean"):
        first = runs[names[0]]["clean"]
        rows.append(
            (f"**clean scans** ({Path(report['clean']).name}, {first['scans']} scans) at "
             "test 1's thresholds", *blank)
        )  # fmt: skip
        row("alarm share", lambda r: _pct(r["clean"]["alarm_share"]))
    row(
        "validation curve: scan detection at 1 % (minutes)",
        lambda r: ", ".join(f"{p['detection_rate']:.2f} ({p['minutes']:.1f})"
                            if p["detection_rate"] is not None else f"— ({p['minutes']:.1f})"
                            for p in r["curve"]),
    )  # fmt: skip
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def curves_png(report: dict[str, Any], path: Path) -> None:
    """Scan detection rate at 1 % false alarms on the validation scans against the
    training minutes spent, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, style in zip(MODELS, ("o-", "s--"), strict=True):
        if name not in report["models"]:
            continue
        points = [p for p in report["models"][name]["curve"] if p["detection_rate"] is not None]
        ax.plot([p["minutes"] for p in points], [p["detection_rate"] for p in points], style,
                label=name)  # fmt: skip
    ax.set_xlabel("training wall clock (minutes; one model at a time, same machine)")
    ax.set_ylabel("scan detection at 1 % false alarms")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    title = f"Same data, same budget ({report['minutes']:g} min each), from scratch"
    if report.get("label"):
        title += f": {report['label']}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> str:
    """OUT/report.md, report.json and curves.png; returns the markdown."""
    names = present(report)
    heading = (
        "CargoNet against YOLOv8n"
        if len(names) == len(MODELS)
        else f"{names[0]} alone (half of a split run: `--merge` it with the other half)"
    )
    text = (
        f"# {heading}: same data, same budget ({report['minutes']:g} min each)\n\n"
        f"{report['setup']}\n\n{table(report)}\n![training curves](curves.png)\n"
    )
    (out / "report.md").write_text(text)
    slim = json.loads(json.dumps(report))
    for run in slim["models"].values():
        for test in run["tests"]:
            test.pop("seconds_per_scan", None)
    (out / "report.json").write_text(json.dumps(slim, indent=2) + "\n")
    curves_png(report, out / "curves.png")
    return text
