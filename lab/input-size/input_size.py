"""Per-face CPU time of the PIP-head candidates by input size, beside dlib, in one run.

    python lab/input-size/input_size.py [--sizes 112,128,144,160] [--without-last-conv 96] [--trunk16 112] [--images 60] [--out lab/input-size/input_size.md]

The accuracy campaign (issue 12) bounds the bundled models by dlib's per-face time
(1 thread, ONNX Runtime, box given, flip included when on): the default at most 3x,
the fast model at most 1x. Accuracy grows with the input size (lab/ablation/ablation-all.md),
so this measures what each size costs: MobileNetV2 + PIP head (stride 32, 10 neighbours,
the network of `model.head: pip`), BatchNorm fused, exported to ONNX, run through
``facepoints.load(..., detector=None, threads=1)`` on tight landmark boxes of 300-W
validation photos, without and with flip, interleaved face by face with dlib's 68-point
model on the same box so that the shared machine's noise hits all alike. The weights
are untrained (time does not depend on them). Without ../shared/data, random images are
used and dlib's column is skipped.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import facepoints
from facepoints.curation.labeling import dlib_landmarker
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.deploy.export import write_onnx
from facepoints.evaluation.machine import cpu_name
from facepoints.models.network import build_model
from facepoints.models.package import ModelInfo
from facepoints.optimize.fuse import fuse_batchnorm
from facepoints.schemes import IBUG68
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits


def candidate(size: int, folder: Path, last_conv: bool = True, stride: int = 32) -> Path:
    kw = {"input_size": size, "pip_neighbours": 10, "pip_stride": stride, "last_conv": last_conv, "trunk_stride": stride}
    model = build_model("mobilenet_v2", 68, head="pip", **kw).eval()
    info = ModelInfo(scheme=IBUG68.to_dict(), backbone="mobilenet_v2", head="pip", input_size=size,
                     crop_scale=1.25, recipe={"model_kwargs": kw})
    path = folder / f"pip{size}-{int(last_conv)}-{stride}.onnx"
    write_onnx(fuse_batchnorm(model)[0], info, path)
    return path


ROOT = Path(__file__).resolve().parents[2]
SHARED_300W = ROOT.parent / "shared" / "data" / "300w"  # where lab/ablation/ablation-all.yaml reads 300-W


def faces(n: int):
    """(image, box) pairs: 300-W validation faces of lab/ablation/ablation-all.yaml, or random
    images when ../shared/data is not there (any other failure is raised, not hidden)."""
    if not SHARED_300W.is_dir():
        print(f"no {SHARED_300W}: random images instead")
        rng = np.random.default_rng(0)
        return [(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), np.array([200, 120, 440, 360.0]))
                for _ in range(n)], False
    cfg = load_config(ROOT / "lab" / "ablation" / "ablation-all.yaml")
    val = [s for s in make_splits(cfg).val if s.attributes["source"].startswith("300w:")
           and "infanface" not in s.attributes["source"]][:n]
    return [(read_image(s.image), landmark_box(s.landmarks)) for s in val], True


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="112,128,144,160")
    ap.add_argument("--without-last-conv", default="", help="sizes to time also with model.last_conv false "
                    "(the head on MobileNetV2's 320 channels before its final 1x1 convolution)")
    ap.add_argument("--trunk16", default="", help="sizes to time also with model.trunk_stride 16 (the trunk "
                    "ending after its last stride-16 block, MobileNetV2's 96 channels; the PIP grid at stride 16)")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--out", default="lab/input-size/input_size.md")
    ap.add_argument("--note", default="", help="a sentence for the header (e.g. what else shared the CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    nets = [(int(s), True, 32) for s in args.sizes.split(",") if s]
    nets += [(int(s), False, 32) for s in args.without_last_conv.split(",") if s]
    nets += [(int(s), False, 16) for s in args.trunk16.split(",") if s]
    folder = Path(tempfile.mkdtemp())
    runners = {}
    for s, last, stride in nets:
        path = candidate(s, folder, last, stride)
        runners[(s, last, stride, False)] = facepoints.load(path, detector=None, threads=1, flip=False)
        runners[(s, last, stride, True)] = facepoints.load(path, detector=None, threads=1, flip=True)
    samples, real = faces(args.images)
    dlib = None
    if real:
        try:
            dlib = dlib_landmarker()
        except ImportError:
            print("dlib not installed: its column is skipped")
    times = {k: [] for k in runners}
    dlib_ms = []
    for rep in range(3):  # the first pass warms up
        for img, box in samples:
            for k, p in runners.items():
                t = time.perf_counter()
                p.landmarks_in_boxes(img, box[None])
                times[k].append(time.perf_counter() - t)
            if dlib is not None:
                t = time.perf_counter()
                dlib(img, box, own_detector=False)
                dlib_ms.append(time.perf_counter() - t)
        if rep == 0:
            times = {k: [] for k in times}
            dlib_ms = []
    ms = {k: float(np.median(v) * 1000) for k, v in times.items()}
    ref = float(np.median(dlib_ms) * 1000) if dlib_ms else None
    lines = ["# Per-face CPU time of the PIP-head networks by input size, beside dlib",
             "",
             f"Generated {datetime.date.today()} by `python lab/input-size/input_size.py --sizes {args.sizes} "
             + (f"--without-last-conv {args.without_last_conv} " if args.without_last_conv else "")
             + (f"--trunk16 {args.trunk16} " if args.trunk16 else "")
             + f"--images {args.images}` on {cpu_name()} (2 shared cores, 1 thread used).",
             "",
             f"MobileNetV2 + PIP head (10 neighbours; stride 32 unless the row says 16), BatchNorm fused, ONNX Runtime, 1 thread, "
             f"{len(samples)} {'300-W validation faces (tight landmark box given)' if real else 'random images'}; "
             "median of 2 timed passes after a warm-up pass, every network and dlib interleaved face by face. "
             "Includes the crop and the mapping back to the image, as `Predictor.landmarks_in_boxes` runs them. "
             "Bars (issue 12): default model with flip at most 3x dlib, fast model at most 1x." +
             (f" {args.note}" if args.note else ""),
             "",
             "| input px | grid | head on | ms per face | ratio to dlib | ms per face + flip | ratio to dlib |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for s, last, stride in nets:
        g = -(-s // stride)
        a, b = ms[(s, last, stride, False)], ms[(s, last, stride, True)]
        r0, r1 = (f"{a / ref:.2f}x", f"{b / ref:.2f}x") if ref else ("-", "-")
        on = ("96 channels at stride 16 (trunk_stride: 16)" if stride == 16 else
              "1280 channels (last_conv: true)" if last else "320 channels (last_conv: false)")
        lines.append(f"| {s} | {g} x {g} | {on} | {a:.2f} | {r0} | {b:.2f} | {r1} |")
    if ref:
        lines.append(f"| dlib 68-point ERT | - | - | {ref:.2f} | 1.00x | - | - |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
