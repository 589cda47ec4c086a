"""Ablation: one idea per row, each trained with one config (same data, same
validation split, same budget) and keys changed with ``--set``. Two tables:
``default`` (``lab/ablation/ablation.yaml`` -> ``lab/ablation/ablation.md``: the recipe of the
first bundled models) and ``all`` (``lab/ablation/ablation-all.yaml`` ->
``lab/ablation/ablation-all.md``: every human-labelled source, the accuracy campaign).

    python lab/ablation/ablation.py train                          # every missing row (resumable)
    python lab/ablation/ablation.py train --table all --only pip16 # one row
    python lab/ablation/ablation.py table --table all              # writes lab/ablation/ablation-all.md

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

CONFIG = "lab/ablation/ablation.yaml"
RUNS = Path("runs/ablation")

# name, what it tests, --set overrides (the base row is lab/ablation/ablation.yaml as is)
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
    ("pseudo", "+ CUHK faces with dlib pseudo-labels (lab/pseudo-labels/pseudo_cuhk.md), training only",
     ["data.train=[{spec: '300w:../shared/data/300w/afw', repeat: 2}, "
      "{spec: '300w:../shared/data/300w/helen/trainset', repeat: 2}, "
      "'ytf:../shared/data/ytf68/training_frames_keypoints.csv', 'ytf:../shared/data/ytf68/test_frames_keypoints.csv', "
      "{spec: 'csv:runs/pseudo-cuhk/kept.csv', val_fraction: 0}]"]),
]


# Distillation at the fast model's settings (lab/ablation/fast.yaml: the default recipe's
# stage-2 weights adapted to 64 px, L2, 3 epochs), student alone vs distilled from the
# stage-2 model at 112 px. Not trained by this script: the commands are in the table.
FAST_ROWS: list[tuple[str, str, Path, list[str]]] = [
    ("fast", "64 px from the stage-2 weights, alone", Path("runs/fast"),
     ["facepoints", "train", "lab/ablation/fast.yaml", "--output", "runs/fast"]),
    ("fast-distill", "the same, distilled from stage 2 (weight 0.5)", Path("runs/fast-distill"),
     ["facepoints", "train", "lab/ablation/fast.yaml", "--output", "runs/fast-distill",
      "--set", "distill={teacher: runs/default-stage2/best.safetensors, weight: 0.5}"]),
    ("fast-pseudo", "64 px from the stage-3 (bundled) weights, + pseudo-labels, 3 epochs", Path("runs/fast-pseudo"),
     ["facepoints", "train", "lab/ablation/fast-pseudo.yaml"]),
    ("fast80", "80 px from the stage-3 weights, + pseudo-labels, 8 epochs", Path("runs/fast80"),
     ["facepoints", "train", "lab/ablation/fast80.yaml"]),
    ("fast80-distill", "the same, distilled from the bundled default model (weight 0.5)", Path("runs/fast80-distill"),
     ["facepoints", "train", "lab/ablation/fast80.yaml", "--output", "runs/fast80-distill",
      "--set", "distill={teacher: src/facepoints/weights/default.safetensors, weight: 0.5}"]),
]
CONFIG_ALL = "lab/ablation/ablation-all.yaml"
RUNS_ALL = Path("runs/ablation-all")
# The accuracy campaign (issue 12): heads first on the base recipe, then each idea on the
# chosen head (HEAD) at the same budget.
HEAD = ["model.head=pip", "loss.name=l1"]  # PIP on the stride-32 grid: the best head row (pip32)
ROWS_ALL: list[tuple[str, str, list[str]]] = [
    ("base", "MobileNetV2 (ImageNet), regression, Wing, 112 px, 3 epochs", []),
    ("pip32", "PIP head, stride 32 (4 x 4 grid), L1", HEAD),
    ("pip16", "PIP head, stride 16 (7 x 7 grid: one deconvolution), L1",
     ["model.head=pip", "model.pip_stride=16", "loss.name=l1"]),
    ("heatmap", "heatmap head (soft-argmax, 28 x 28), Wing on coordinates", ["model.head=heatmap"]),
    # each idea on the chosen head, in the order they were run
    ("pose-aug", "+ large-pose augmentation: rotation +-40 deg, box scale +-20 %, shift +-10 %",
     [*HEAD, "augment.rotate=40", "augment.scale=0.2", "augment.shift=0.1"]),
    ("occlusion", "+ synthetic occluders (1-3 noise rectangles, half the crops)", [*HEAD, "augment.occlusion=0.5"]),
    ("infants-x4", "+ infant faces oversampled x4", [*HEAD, "data.train.5.repeat=4"]),
    ("size128", "input 128 px (4 x 4 grid)", [*HEAD, "model.input_size=128"]),
    ("size160", "input 160 px (5 x 5 grid)", [*HEAD, "model.input_size=160"]),
    ("pip32-4ep", "PIP-32, 4 epochs (30.2k images: the control for pseudo)", [*HEAD, "optim.epochs=4"]),
    ("pseudo", "+ 7,078 CUHK lfw_5590 + net_7876 faces with dlib pseudo-labels (lab/pseudo-labels/pseudo_cuhk.md), "
     "training only, 2 epochs (1.29x pip32's images: 29.3k vs 22.6k)",
     [*HEAD, "data.train.6={spec: 'csv:runs/pseudo-cuhk/kept.csv', val_fraction: 0}", "optim.epochs=2"]),
    ("balanced", "+ data.balance by yaw (1.56x the images per epoch: 11,780 vs 7,548)", [*HEAD, "data.balance={by: yaw}"]),
    ("balanced-2ep", "+ data.balance by yaw, 2 epochs (the same images as 3 unbalanced: 23.6k vs 22.6k)",
     [*HEAD, "data.balance={by: yaw}", "optim.epochs=2"]),
    ("size192", "input 192 px (6 x 6 grid)", [*HEAD, "model.input_size=192"]),
    ("resnet18", "ResNet-18 from scratch (no ImageNet ResNet weights offline)",
     [*HEAD, "model.backbone=resnet18", "model.pretrained=false"]),
]
READING = "## Reading"  # a hand-written section after the tables, kept when the tables are rewritten


def write_keeping_reading(out: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``out``, followed by the hand-written ``## Reading`` section of
    the file being replaced, if it has one."""
    old = out.read_text() if out.exists() else ""
    if READING in old:
        lines = [*lines, "", old[old.index(READING):].rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")


TABLES = {"default": (CONFIG, RUNS, ROWS), "all": (CONFIG_ALL, RUNS_ALL, ROWS_ALL)}


def command(name: str, sets: list[str], table: str = "default") -> list[str]:
    config, runs, _ = TABLES[table]
    cmd = ["facepoints", "train", config, "--output", str(runs / name)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def train_rows(only: list[str] | None, table: str = "default") -> None:
    _, runs, rows = TABLES[table]
    for name, _, sets in rows:
        if only and name not in only:
            continue
        train_run(runs / name, command(name, sets, table))


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
    from facepoints.deploy.runners import cached_onnx
    from facepoints.inference.runtime import OnnxRunner
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
        f"Generated {datetime.date.today()} by `python lab/ablation/ablation.py table` on "
        f"{cpu_name()} ({platform.machine()}) "
        "(2 shared CPU cores, no GPU).",
        "",
        "Every row trains `lab/ablation/ablation.yaml` (the default recipe at a reduced budget: "
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
              "`lab/ablation/fast.yaml`: the default recipe's stage-2 weights (trained at 112 px) adapted to a 64 px "
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


SOURCES_ALL = {"300-W": ("300w:afw", "300w:helen/trainset", "300w:lfpw/trainset"),
               "YTF": ("ytf:training_frames_keypoints.csv", "ytf:test_frames_keypoints.csv"),
               "infants": ("300w:train",)}  # source_labels: the only source whose last folder is "train"
YAWS = ("yaw 0-15", "yaw 15-30", "yaw 30-45", "yaw 45+")


def pooled(rec: dict, labels) -> float | None:
    """The validation NME of several sources together (weighted by their face counts)."""
    n = [rec.get(f"val_n[{k}]", 0) for k in labels]
    if not sum(n):
        return None
    return sum(rec[f"val_nme_io[{k}]"] * c for k, c in zip(labels, n) if c) / sum(n)


# The finished rows' numbers, committed: runs/ is not kept from one session (or clone) to the
# next, so a row trained once stays in the table; a row whose run folder is present is
# measured again (and its record rewritten).
RECORDS_ALL = Path("lab/ablation/ablation-all.json")


def table_all(out: Path, repeats: int) -> None:
    stored = json.loads(RECORDS_ALL.read_text()) if RECORDS_ALL.exists() else {}
    recs = {name: best_epoch(RUNS_ALL / name) for name, _, _ in ROWS_ALL}
    counts = next((r for r in [*recs.values(), *stored.values()] if r), {})
    n_of = {k: sum(counts.get(f"val_n[{x}]", 0) for x in v) for k, v in SOURCES_ALL.items()}
    n_yaw = {y: counts.get(f"val_n[{y}]", 0) for y in YAWS}
    lines = [
        "# Ablation on all the data (the accuracy campaign): one idea per row, same data, split and budget",
        "",
        f"Generated {datetime.date.today()} by `python lab/ablation/ablation.py table --table all` on "
        f"{cpu_name()} ({platform.machine()}) (2 shared CPU cores, no GPU).",
        "",
        f"Every row trains `{CONFIG_ALL}` (MobileNetV2 with ImageNet weights, 112 px, 3 epochs over 300-W "
        "AFW + HELEN train + LFPW train (x2), the YTF 68-point frames and the InfAnFace training faces) with "
        "the keys in its command changed. The first rows compare heads on the base recipe; the rows after "
        f"them change one idea on the chosen head (`{' '.join(HEAD)}`). NME (inter-ocular, %) of the best "
        "epoch (by overall validation NME) on the held-out split: "
        + ", ".join(f"{k} {v} faces" for k, v in n_of.items())
        + " (whole 300-W photos, whole YTF persons, infant images never seen in training), and per |yaw| "
        "bucket of the labelled pose (" + ", ".join(f"{y.split()[1]}: {n}" for y, n in n_yaw.items())
        + " faces, all sources); centre crops from the ground-truth landmark box, no flip. "
        f"Latency: one face through ONNX Runtime, 1 thread, median of {repeats} runs, all rows timed one "
        "after another in the same process. One seed per row: read differences below ~0.1 NME as noise.",
        "",
        "| row | idea | val NME % | 300-W | YTF | infants | " + " | ".join(f"\\|{y}\\|" for y in YAWS)
        + " | FR@0.1 % | train s | img/s | params (M) | latency ms | command |",
        "|---|---|" + "---:|" * (4 + len(YAWS) + 5) + "---|",
    ]
    for name, what, sets in ROWS_ALL:
        cmd = "`" + shlex.join(command(name, sets, "all")) + "`"
        b = recs[name]
        if b is not None:
            params, ms = latency_ms(RUNS_ALL / name / "best.safetensors", repeats)
            stored[name] = {**b, "params": params, "latency_ms": ms, "command": cmd}
        elif name in stored and stored[name].get("command") == cmd:
            b = stored[name]
            params, ms = b["params"], b["latency_ms"]
        else:
            lines.append(f"| {name} | {what} | not run |" + " |" * (3 + len(YAWS) + 5) + f" {cmd} |")
            continue
        cells = [pooled(b, v) for v in SOURCES_ALL.values()] + [b.get(f"val_nme_io[{y}]") for y in YAWS]
        lines.append(f"| {name} | {what} | {b['val_nme_io']:.2f} | "
                     + " | ".join("" if c is None else f"{c:.2f}" for c in cells)
                     + f" | {b['val_fr10']:.2f} | {b['train_seconds_total']:.0f} | {b['images_per_second_mean']:.0f} | "
                     f"{params / 1e6:.2f} | {ms:.2f} | {cmd} |")
        print(lines[-1], flush=True)
    write_keeping_reading(out, lines)
    RECORDS_ALL.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} and {RECORDS_ALL}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="train the rows that are not done (resumes interrupted ones)")
    t.add_argument("--only", nargs="*", help="row names")
    t.add_argument("--table", choices=sorted(TABLES), default="default")
    s = sub.add_parser("table", help="write the markdown table")
    s.add_argument("--table", choices=sorted(TABLES), default="default")
    s.add_argument("--out", type=Path, help="default: lab/ablation/ablation.md, or ablation-all.md for --table all")
    s.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    if args.what == "train":
        train_rows(args.only, args.table)
    elif args.table == "all":
        table_all(args.out or Path("lab/ablation/ablation-all.md"), args.repeats)
    else:
        table(args.out or Path("lab/ablation/ablation.md"), args.repeats)


if __name__ == "__main__":
    sys.exit(main())
