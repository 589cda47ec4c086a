"""What the trust outputs (error radius, visibility, quality) cost at inference: each
bundled model's ONNX file against the same network exported without them
(`facepoints export --no-trust`), one thread, interleaved, on the same validation faces
with their ground-truth boxes. Per face: `Predictor.predict` with the box given (landmarks,
trust outputs, quality and head pose, what `predict` returns), the network with its trust
outputs (`faces_in_boxes`) and the landmarks alone (`landmarks_in_boxes`, which passes
`trust_wanted` false: the trust modules are skipped); dlib's 68-point model on the same
boxes for the ratio.

    python benchmarks/trust_cost.py --out benchmarks/trust_cost.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import facepoints
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.deploy.export import export_model
from facepoints.evaluation.machine import command_line, report_header
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default-pip.yaml", help="the validation split's config")
    ap.add_argument("--faces", type=int, default=120, help="300-W validation faces to time")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (after one warm-up pass)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    val = [s for s in make_splits(load_config(a.config)).val.samples if s.attributes["source"].startswith("300w:")]
    rng = np.random.default_rng(0)
    val = [val[i] for i in sorted(rng.choice(len(val), min(a.faces, len(val)), replace=False))]
    images = [read_image(s.image) for s in val]
    boxes = [landmark_box(s.landmarks)[None] for s in val]
    tmp = Path(tempfile.mkdtemp(prefix="facepoints-trust-cost-"))
    runs = {}
    for name in ("default", "fast"):
        export_model(name, "onnx", tmp / f"{name}-no-trust.onnx", trust=False)
        runs[f"{name}, with trust outputs (bundled)"] = facepoints.load(name, detector=None, threads=1, flip=False)
        runs[f"{name}, --no-trust"] = facepoints.load(tmp / f"{name}-no-trust.onnx", detector=None, threads=1,
                                                     flip=False)
    try:
        from facepoints.curation.labeling import dlib_landmarker

        dlib = dlib_landmarker()
    except Exception:  # noqa: BLE001 (dlib is optional)
        dlib = None
    calls = {"predict": lambda p, img, box: p.predict(img, landmark_boxes=box),
             "network": lambda p, img, box: p.faces_in_boxes(img, box),
             "landmarks": lambda p, img, box: p.landmarks_in_boxes(img, box)}
    times = {(k, w): [] for k in runs for w in calls}
    dlib_t = []
    order = list(times) + ([("dlib", "")] if dlib is not None else [])
    for rep in range(a.repeats + 1):
        for i, (img, box) in enumerate(zip(images, boxes)):
            for j in range(len(order)):  # a rotating order: no call always runs first or after the same one
                k, what = order[(i + j) % len(order)]
                t = time.perf_counter()
                if k == "dlib":
                    dlib(img, box[0], own_detector=False)
                    dlib_t.append(time.perf_counter() - t)
                else:
                    calls[what](runs[k], img, box)
                    times[(k, what)].append(time.perf_counter() - t)
        if rep == 0:  # warm-up
            times = {k: [] for k in times}
            dlib_t = []
    ms = {k: float(np.median(v)) * 1000 for k, v in times.items()}
    ref = float(np.median(dlib_t)) * 1000 if dlib_t else None
    lines = report_header("Trust outputs: what they cost at inference", command_line(__file__, argv),
                          "1 thread, nothing else running")
    lines += [f"{len(images)} 300-W validation faces, ground-truth boxes, {a.repeats} timed passes after a warm-up, "
              "every model and call in turn on each face, in a rotating order. ONNX Runtime runs every node of "
              "a graph whatever outputs are asked for; the bundled files hold their trust modules under an If on the input `trust_wanted`, "
              "which landmark-only calls set false; `--no-trust` leaves the modules out of the file.",
              "", "| model | ms per face, predict (landmarks + trust + pose) | ms per face, network with trust outputs "
              "(faces_in_boxes) | ms per face, landmarks alone (landmarks_in_boxes) | landmarks alone, ratio to dlib |",
              "|---|---:|---:|---:|---:|"]
    for k in runs:
        r = f"{ms[(k, 'landmarks')] / ref:.2f}x" if ref else "-"
        lines.append(f"| {k} | {ms[(k, 'predict')]:.2f} | {ms[(k, 'network')]:.2f} | {ms[(k, 'landmarks')]:.2f} | {r} |")
    if ref:
        lines.append(f"| dlib 68-point ERT (the same boxes) | - | - | {ref:.2f} | 1.00x |")
    lines.append("")
    for name in ("default", "fast"):
        on, off = f"{name}, with trust outputs (bundled)", f"{name}, --no-trust"
        w, wo = ms[(on, "network")], ms[(off, "network")]
        pw, pwo = ms[(on, "predict")], ms[(off, "predict")]
        lw, lwo = ms[(on, "landmarks")], ms[(off, "landmarks")]
        lines.append(f"- {name}: the trust outputs cost {w - wo:+.2f} ms per face on the network "
                     f"({100 * (w / wo - 1):+.0f} %), {pw - pwo:+.2f} ms through predict ({100 * (pw / pwo - 1):+.0f} %); "
                     f"landmark-only calls, the bundled file against --no-trust: {lw - lwo:+.2f} ms "
                     f"({100 * (lw / lwo - 1):+.0f} %)")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
