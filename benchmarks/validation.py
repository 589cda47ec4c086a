"""Accuracy on the held-out validation split of a training config, side by side with
dlib's 68-point model, in one run.

    python benchmarks/validation.py --config configs/default.yaml --model runs/default/best.safetensors

The validation split is the one training held out (whole 300-W photos and whole
YTF persons, by a stable hash): never trained on, never tuned on. Every method sees
the same faces. "GT box" is the standard protocol (crop from the ground-truth
landmarks); for dlib, whose predictor expects its own detector's boxes, the GT box
is mapped to a dlib-style box through the inverse of the dlib-hog calibration in
facepoints.deploy.detectors (same information, its own convention). Writes a
markdown table to --out.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.deploy.predictor import Predictor
from facepoints.evaluation.metrics import auc, failure_rate, nme
from facepoints.schemes import IBUG68
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits


def dlib_box_from_landmark_box(box):
    from facepoints.deploy.detectors import DlibHogDetector

    c = DlibHogDetector.calibration
    tw, th = box[2] - box[0], box[3] - box[1]
    w, h = tw / c.sw, th / c.sh
    cx = (box[0] + box[2]) / 2 - c.dx * w
    cy = (box[1] + box[3]) / 2 - c.dy * h
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def dlib_runner():
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        return None
    sp = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def run(img, box):
        x0, y0, x1, y1 = (int(round(v)) for v in dlib_box_from_landmark_box(box))
        shape = sp(img, dlib.rectangle(x0, y0, x1, y1))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    return run


def row(name, pred, gt, seconds):
    e = nme(pred, gt, IBUG68, "io")
    return (f"| {name} | {len(e)} | {e.mean() * 100:.2f} | {nme(pred, gt, IBUG68, 'ip').mean() * 100:.2f} | "
            f"{failure_rate(e) * 100:.2f} | {auc(e):.4f} | {seconds * 1000 / len(e):.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--out", default="benchmarks/validation.md")
    ap.add_argument("--limit", type=int, default=None, help="at most this many faces per subset")
    args = ap.parse_args()

    cfg = load_config(args.config)
    val = make_splits(cfg).val
    subsets = {
        "300-W val (AFW + HELEN photos held out)": [s for s in val.samples if s.attributes["source"].startswith("300w:")],
        "YTF val (persons held out)": [s for s in val.samples if s.attributes["source"].startswith("ytf:")],
    }
    variants = {
        "facepoints (GT box)": dict(refine=0, flip=False),
        "facepoints + flip TTA (GT box)": dict(refine=0, flip=True),
    }
    dlib = dlib_runner()
    lines = []
    for title, samples in subsets.items():
        samples = samples[: args.limit] if args.limit else samples
        if not samples:
            continue
        gt = np.stack([s.landmarks for s in samples])
        images = [read_image(s.image) for s in samples]
        boxes = [landmark_box(s.landmarks) for s in samples]
        lines += [f"\n### {title}\n", "| method | faces | NME io % | NME ip % | FR@0.1 % | AUC@0.1 | ms/face |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, kw in variants.items():
            p = Predictor.from_file(args.model, detector=None, threads=1, **kw)
            t = time.perf_counter()
            pred = np.stack([p.landmarks_in_boxes(img, b[None])[0] for img, b in zip(images, boxes)])
            lines.append(row(name, pred, gt, time.perf_counter() - t))
        if dlib is not None:
            t = time.perf_counter()
            pred = np.stack([dlib(img, b) for img, b in zip(images, boxes)])
            lines.append(row("dlib 68-point ERT (GT-derived box)", pred, gt, time.perf_counter() - t))
        print("\n".join(lines[-(len(variants) + 1 + (dlib is not None)):]), flush=True)

    cpu = subprocess.run("lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True, text=True).stdout.strip()
    head = [
        "# Validation split accuracy\n",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Date: {datetime.date.today()}  ",
        f"Machine: {cpu or platform.processor()}, 2 cores; timings with 1 thread, shared machine (indicative only)  ",
        f"Model: {args.model or 'bundled default'}; split from `{args.config}` (seed {cfg.seed}, val_fraction {cfg.data.val_fraction}).",
        "NME in percent of the outer-eye-corner distance (io) or the eye-centre distance (ip).",
    ]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
