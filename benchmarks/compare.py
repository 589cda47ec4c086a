"""Accuracy and CPU speed, side by side with dlib's 68-point model, in one run.

    python benchmarks/compare.py --config configs/default.yaml [--model M]

Accuracy: on the held-out validation split of a training config.
The validation split is the one training held out (whole 300-W photos and whole
YTF persons, by a stable hash): never trained on, never tuned on. Every method sees
the same faces. "GT box" is the standard protocol (crop from the ground-truth
landmarks); for dlib, whose predictor expects its own detector's boxes, the GT box
is mapped to a dlib-style box through the inverse of the dlib-hog calibration in
facepoints.deploy.detectors (same information, its own convention).

Speed (one thread, the same images, methods interleaved image by image so that the
shared machine's noise hits all alike): ms per face with the box given (landmarks
only) and ms per whole image (face detector + landmarks). Writes markdown to --out.
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

from facepoints.data.crops import box_iou
from facepoints.data.images import read_image
from facepoints.data.labeling import dlib_landmarker
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

        landmarks = dlib_landmarker()
    except ImportError:
        return None
    hog = dlib.get_frontal_face_detector()

    def run(img, box, own_detector=False):
        """``box``: a tight landmark box, or with ``own_detector`` the GT landmark box
        used only to pick dlib's own HOG detection of that face (the boxes its
        predictor was trained on), falling back to the mapped box when HOG misses."""
        x0, y0, x1, y1 = dlib_box_from_landmark_box(box)
        if own_detector:
            dets = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in hog(img, 1)], np.float64)
            if len(dets):
                ious = box_iou(dets, (x0, y0, x1, y1))
                if ious.max() > 0.3:
                    x0, y0, x1, y1 = dets[int(np.argmax(ious))]
        return landmarks(img, (x0, y0, x1, y1))

    return run


def row(name, pred, gt, seconds):
    e = nme(pred, gt, IBUG68, "io")
    return (f"| {name} | {len(e)} | {e.mean() * 100:.2f} | {nme(pred, gt, IBUG68, 'ip').mean() * 100:.2f} | "
            f"{failure_rate(e) * 100:.2f} | {auc(e):.4f} | {seconds * 1000 / len(e):.1f} |")


def speed(args, samples, dlib) -> list[str]:
    """ms per face (box given) and per image (detector + landmarks), 1 thread."""
    import cv2
    import tempfile

    import torch

    from facepoints.deploy.export import write_onnx
    from facepoints.models.package import load_model
    from facepoints.optimize.fuse import fuse_batchnorm

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    images = [read_image(s.image) for s in samples]
    boxes = [landmark_box(s.landmarks) for s in samples]
    model, info = load_model(args.model)
    fused = fuse_batchnorm(model)[0]
    onnx_path = Path(tempfile.mkdtemp()) / "m.onnx"
    write_onnx(fused, info, onnx_path)
    per_face = {
        "facepoints PyTorch fp32": Predictor(model, info, detector=None, threads=1, flip=False),
        "facepoints PyTorch fp32, BN fused": Predictor(fused, info, detector=None, threads=1,
                                                       flip=False),
        "facepoints ONNX Runtime fp32": Predictor.from_file(onnx_path, detector=None, threads=1, flip=False),
        "facepoints ONNX Runtime fp32 + flip TTA": Predictor.from_file(onnx_path, detector=None, threads=1, flip=True),
    }
    per_image = {
        "facepoints: YuNet + ONNX Runtime, flip TTA, refine 1 (the CLI default)":
            Predictor.from_file(onnx_path, threads=1, flip=True, refine=1),
        "facepoints: YuNet + ONNX Runtime, no flip, refine 0 (fastest)":
            Predictor.from_file(onnx_path, threads=1, flip=False, refine=0),
    }
    times = {k: [] for k in [*per_face, *per_image]}
    dlib_face, dlib_image = [], []
    if dlib is not None:
        import dlib as _dlib

        hog = _dlib.get_frontal_face_detector()
    for rep in range(2):  # the first pass warms up; only the second is timed
        for img, box in zip(images, boxes):
            for name, p in per_face.items():
                t = time.perf_counter()
                p.landmarks_in_boxes(img, box[None])
                times[name].append(time.perf_counter() - t)
            for name, p in per_image.items():
                t = time.perf_counter()
                p.predict(img)
                times[name].append(time.perf_counter() - t)
            if dlib is not None:
                t = time.perf_counter()
                dlib(img, box)
                dlib_face.append(time.perf_counter() - t)
                t = time.perf_counter()
                for r in hog(img, 1):
                    dlib(img, (r.left(), r.top(), r.right(), r.bottom()))
                dlib_image.append(time.perf_counter() - t)
        if rep == 0:
            times = {k: [] for k in times}
            dlib_face, dlib_image = [], []
    ms = {k: np.median(v) * 1000 for k, v in times.items()}
    ref_face = np.median(dlib_face) * 1000 if dlib_face else None
    ref_image = np.median(dlib_image) * 1000 if dlib_image else None
    out = [f"\n### CPU speed, 1 thread, median over {len(images)} 300-W validation images\n",
           "| method | ms per face (box given) | ms per image (detector + landmarks) | ratio to dlib |",
           "|---|---:|---:|---:|"]
    for k in per_face:
        ratio = f"{ms[k] / ref_face:.2f}x" if ref_face else "-"
        out.append(f"| {k} | {ms[k]:.2f} | - | {ratio} |")
    for k in per_image:
        ratio = f"{ms[k] / ref_image:.2f}x" if ref_image else "-"
        out.append(f"| {k} | - | {ms[k]:.2f} | {ratio} |")
    if ref_face:
        out.append(f"| dlib 68-point ERT (HOG detector, upsample 1) | {ref_face:.2f} | {ref_image:.2f} | 1.00x |")
    print("\n".join(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--out", default="benchmarks/compare.md")
    ap.add_argument("--speed-images", type=int, default=60, help="images for the speed section (0: skip it)")
    ap.add_argument("--no-dlib", action="store_true", help="leave dlib out")
    ap.add_argument("--limit", type=int, default=None, help="at most this many faces per subset")
    args = ap.parse_args()

    cfg = load_config(args.config)
    val = make_splits(cfg).val
    subsets = {
        "300-W val (AFW + HELEN photos held out)": [s for s in val.samples if s.attributes["source"].startswith("300w:")],
        "YTF val (persons held out)": [s for s in val.samples if s.attributes["source"].startswith("ytf:")],
    }
    variants = {
        "facepoints, no flip (GT box)": dict(refine=0, flip=False),
        "facepoints + flip TTA (GT box)": dict(refine=0, flip=True),
    }
    dlib = None if args.no_dlib else dlib_runner()
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
            t = time.perf_counter()
            pred = np.stack([dlib(img, b, own_detector=True) for img, b in zip(images, boxes)])
            lines.append(row("dlib 68-point ERT (its HOG box matched to the GT face)", pred, gt,
                             time.perf_counter() - t) + " (ms include HOG detection)")
        print("\n".join(lines[-(len(variants) + 2 * (dlib is not None)):]), flush=True)

    if args.speed_images:
        lines += speed(args, subsets["300-W val (AFW + HELEN photos held out)"][: args.speed_images], dlib)
    cpu = subprocess.run("lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True, text=True).stdout.strip()
    head = [
        "# facepoints vs dlib: accuracy on the validation split, CPU speed\n",
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
