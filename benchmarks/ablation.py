"""Ablation: one idea per row, each trained with ``configs/ablation.yaml`` (same data,
same validation split, same budget) and one key changed with ``--set``.

    python benchmarks/ablation.py train            # trains every missing row (resumable)
    python benchmarks/ablation.py train --only l1  # one row
    python benchmarks/ablation.py table            # writes benchmarks/ablation.md

Columns: validation NME (inter-ocular, %) and FR@0.1 of the best epoch on the held-out
split (centre crops from the ground-truth landmark box, no flip), training seconds
(sum over epochs, as logged), images/second, parameters, and single-face CPU latency
(ONNX Runtime, 1 intra-op thread, BatchNorm fused, median of repeated runs, all rows
timed in the same process one after another).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facepoints.evaluation.machine import cpu_name

CONFIG = "configs/ablation.yaml"
RUNS = Path("runs/ablation")

# name, what it tests, --set overrides (the base row is configs/ablation.yaml as is)
ROWS: list[tuple[str, str, list[str]]] = [
    ("base", "MobileNetV2 (ImageNet), regression, Wing, 96 px, augmentation", []),
    ("l1", "loss L1", ["loss.name=l1"]),
    ("l2", "loss L2", ["loss.name=l2"]),
    ("heatmap-wing", "heatmap head (soft-argmax), Wing on coordinates", ["model.head=heatmap"]),
    ("heatmap-awing", "heatmap head, Adaptive Wing on heatmaps", ["model.head=heatmap", "loss.name=awing"]),
    ("coordconv", "CoordConv in the head", ["model.coordconv=true"]),
    ("scratch", "no ImageNet weights (from scratch)", ["model.pretrained=false"]),
    ("size64", "input 64 px", ["model.input_size=64"]),
    ("distill", "input 64 px, distilled from the bundled 112 px model (distill.weight 0.5)",
     ["model.input_size=64", "distill={teacher: src/facepoints/weights/default.safetensors, weight: 0.5}"]),
    ("noaug", "augmentation off", ["augment.enabled=false"]),
    ("balanced", "data.balance by yaw, 2 epochs (about the same steps as 3 unbalanced)",
     ["data.balance={by: yaw}", "optim.epochs=2"]),
    ("resnet18", "ResNet-18 from scratch (no ImageNet ResNet weights offline)",
     ["model.backbone=resnet18", "model.pretrained=false"]),
    ("size128", "input 128 px", ["model.input_size=128"]),
    ("pseudo", "+ CUHK faces with dlib pseudo-labels (benchmarks/pseudo_cuhk.md), training only",
     ["data.train=[{spec: '300w:../shared/data/300w/afw', repeat: 2}, "
      "{spec: '300w:../shared/data/300w/helen/trainset', repeat: 2}, "
      "'ytf:../shared/data/ytf68/training_frames_keypoints.csv', 'ytf:../shared/data/ytf68/test_frames_keypoints.csv', "
      "{spec: 'csv:runs/pseudo-cuhk/kept.csv', val_fraction: 0}]"]),
]


# Distillation at the fast model's settings (configs/fast.yaml: the default recipe's
# stage-2 weights adapted to 64 px, L2, 3 epochs), student alone vs distilled from the
# stage-2 model at 112 px. Not trained by this script: the commands are in the table.
FAST_ROWS: list[tuple[str, str, Path, list[str]]] = [
    ("fast", "64 px from the stage-2 weights, alone", Path("runs/fast"),
     ["facepoints", "train", "configs/fast.yaml", "--output", "runs/fast"]),
    ("fast-distill", "the same, distilled from stage 2 (weight 0.5)", Path("runs/fast-distill"),
     ["facepoints", "train", "configs/fast.yaml", "--output", "runs/fast-distill",
      "--set", "distill={teacher: runs/default-stage2/best.safetensors, weight: 0.5}"]),
    ("fast-pseudo", "64 px from the stage-3 (bundled) weights, + pseudo-labels, 3 epochs", Path("runs/fast-pseudo"),
     ["facepoints", "train", "configs/fast-pseudo.yaml"]),
    ("fast80", "80 px from the stage-3 weights, + pseudo-labels, 8 epochs", Path("runs/fast80"),
     ["facepoints", "train", "configs/fast80.yaml"]),
    ("fast80-distill", "the same, distilled from the bundled default model (weight 0.5)", Path("runs/fast80-distill"),
     ["facepoints", "train", "configs/fast80.yaml", "--output", "runs/fast80-distill",
      "--set", "distill={teacher: src/facepoints/weights/default.safetensors, weight: 0.5}"]),
]
READING = "## Reading"  # a hand-written section after the tables, kept when the tables are rewritten


def write_keeping_reading(out: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``out``, followed by the hand-written ``## Reading`` section of
    the file being replaced, if it has one."""
    old = out.read_text() if out.exists() else ""
    if READING in old:
        lines = [*lines, "", old[old.index(READING):].rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")


def command(name: str, sets: list[str]) -> list[str]:
    cmd = ["facepoints", "train", CONFIG, "--output", str(RUNS / name)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train_rows(only: list[str] | None) -> None:
    for name, _, sets in ROWS:
        if only and name not in only:
            continue
        train_run(RUNS / name, command(name, sets))


def train_run(out: Path, cmd: list[str]) -> None:
    """Run a ``facepoints train`` command unless its output folder holds a finished run;
    an interrupted one is resumed."""
    if (out / "final.safetensors").exists():
        print(f"{out.name}: done")
        return
    cmd = cmd + (["--resume"] if (out / "last.pt").exists() else [])
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def validated_epochs(run: Path) -> list[dict]:
    """The run's ``metrics.jsonl`` records that carry validation metrics, in order."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in recs if "val_nme_io" in r]


def best_epoch(run: Path) -> dict | None:
    if not (run / "final.safetensors").exists():
        return None
    recs = validated_epochs(run)
    best = min(recs, key=lambda r: r["val_nme_io"])
    best["train_seconds_total"] = sum(r["train_seconds"] for r in recs)
    best["images_per_second_mean"] = float(np.mean([r["images_per_second"] for r in recs]))
    best["steps"] = recs[-1]["step"]
    return best


def latency_ms(model_file: Path, repeats: int) -> tuple[int, float]:
    """Parameters and median ms for one face through ONNX Runtime on 1 thread (the
    model's cached export, as the Predictor runs it)."""
    from facepoints.deploy.runtime import OnnxRunner, cached_onnx
    from facepoints.models.package import load_model

    model, info = load_model(model_file)
    params = sum(p.numel() for p in model.parameters())
    run = OnnxRunner(cached_onnx(model_file), threads=1)
    x = np.random.default_rng(0).random((1, 3, info.input_size, info.input_size), dtype=np.float32)
    for _ in range(10):
        run(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return params, float(np.median(times) * 1000)


HEADER = ("| row | idea | val NME io % | FR@0.1 % | train s | img/s | steps | params (M) | latency ms | command |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")


def table(out: Path, repeats: int) -> None:
    lines = [
        "# Ablation: one idea per row, same data, split and budget",
        "",
        f"Generated {datetime.date.today()} by `python benchmarks/ablation.py table` on "
        f"{cpu_name()} ({platform.machine()}) "
        "(2 shared CPU cores, no GPU).",
        "",
        "Every row trains `configs/ablation.yaml` (the default recipe at a reduced budget: "
        "MobileNetV2 with ImageNet weights, direct regression, Wing loss, 96 px, 3 epochs over "
        "300-W AFW + HELEN train (x2) and the YTF 68-point frames) with one key changed; the "
        "command is in the last column. NME (inter-ocular, %) and FR@0.1 (%) are the best "
        "epoch's on the held-out validation split (567 faces: whole 300-W photos and whole "
        "YTF persons never seen in training; centre crops from the ground-truth landmark "
        "box, no flip). Training time is the logged sum over epochs (crop decoding excluded). "
        "Latency: one face through ONNX Runtime, 1 thread, median of "
        f"{repeats} runs, all rows timed one after another in the same process. A short "
        "budget favours ideas that converge fast; read differences below ~0.1 NME as noise.",
        "",
        *HEADER,
    ]
    def add(name, what, run: Path, cmd: list[str]) -> None:
        b = best_epoch(run)
        cmd = "`" + shlex.join(cmd) + "`"
        if b is None:
            lines.append(f"| {name} | {what} | not run | | | | | | | {cmd} |")
            return
        params, ms = latency_ms(run / "best.safetensors", repeats)
        lines.append(f"| {name} | {what} | {b['val_nme_io']:.2f} | {b['val_fr10']:.2f} | "
                     f"{b['train_seconds_total']:.0f} | {b['images_per_second_mean']:.0f} | {b['steps']} | "
                     f"{params / 1e6:.2f} | {ms:.2f} | {cmd} |")
        print(lines[-1], flush=True)

    for name, what, sets in ROWS:
        add(name, what, RUNS / name, command(name, sets))
    lines += ["", "## The fast model: distillation, then later versions", "",
              "`configs/fast.yaml`: the default recipe's stage-2 weights (trained at 112 px) adapted to a 64 px "
              "input with the L2 loss for 3 epochs, alone and distilled from the stage-2 model (which sees each "
              "augmented crop resampled to its 112 px; `distill.weight` 0.5: half the loss on its landmarks, half "
              "on the annotations). The distilled run's training time includes the teacher's forward passes. "
              "The later versions start from the stage-3 (bundled) weights and add the pseudo-labelled CUHK "
              "faces to the training data (training only: the validation split is the same 567 faces).",
              "", *HEADER]
    for name, what, run, cmd in FAST_ROWS:
        add(name, what, run, cmd)
    write_keeping_reading(out, lines)
    print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="train the rows that are not done (resumes interrupted ones)")
    t.add_argument("--only", nargs="*", help="row names")
    s = sub.add_parser("table", help="write the markdown table")
    s.add_argument("--out", type=Path, default=Path("benchmarks/ablation.md"))
    s.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    if args.what == "train":
        train_rows(args.only)
    else:
        table(args.out, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
