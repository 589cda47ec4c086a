"""Whole image -> landmarks: the inference pipeline (detector and its input size,
refinement, flip) against MediaPipe Face Mesh, by recall, NME and time per image,
including small faces, in one run. Detectors: YuNet at ``--detect-sizes`` and BlazeFace
(MediaPipe's own detector, 128 px), each with the bundled default and fast models.

    python benchmarks/whole_image.py [--limit 60] [--scales 1,0.5,0.25,0.125] [--out benchmarks/whole_image.md]

Images: the held-out 300-W photos of ``configs/default-pip.yaml``'s split (the bundled models
never trained on them), each pasted at ``--scales`` of its size on a mid-grey 960 x 720
canvas (scale 1: the photo as it is, up to 400 px), so that the face's inter-ocular
distance shrinks with the scale: the smallest face found is read off the table. A face
counts as found when a predicted face's landmark box overlaps the ground truth's by IoU
> 0.3; NME (inter-ocular, %) over the faces found. Speed: each image through every
method in turn, image after image (interleaved), median ms per image, 1 thread for
ours (ONNX Runtime and YuNet); MediaPipe in its own venv (``.venv-mediapipe``, see
``benchmarks/compare.py``) times ``FaceMesh.process`` on the same decoded canvas.
Decoding is not timed for anyone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CANVAS = (720, 960)  # h, w


def canvases(samples, scales):
    """(scale, image, ground truth) for every sample at every scale."""
    import cv2

    from facepoints.data.images import read_image

    out = []
    for s in samples:
        img = read_image(s.image)
        for sc in scales:
            h, w = img.shape[:2]
            nh, nw = max(1, round(h * sc)), max(1, round(w * sc))
            small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA) if sc != 1 else img
            if sc == 1:
                out.append((sc, small, s.landmarks.astype(np.float64)))
                continue
            canvas = np.full((*CANVAS, 3), 128, np.uint8)
            y0, x0 = (CANVAS[0] - nh) // 2, (CANVAS[1] - nw) // 3
            canvas[y0:y0 + nh, x0:x0 + nw] = small
            pts = (s.landmarks.astype(np.float64) + 0.5) * [nw / w, nh / h] - 0.5 + [x0, y0]
            out.append((sc, canvas, pts))
    return out


def matched(faces_pts, gt) -> np.ndarray | None:
    from facepoints.data.crops import box_iou
    from facepoints.data.samples import landmark_box

    if not faces_pts:
        return None
    gbox = landmark_box(gt.astype(np.float32))
    ious = box_iou(np.stack([landmark_box(np.asarray(p, np.float32)) for p in faces_pts]), gbox)
    k = int(np.argmax(ious))
    return np.asarray(faces_pts[k], np.float64) if ious[k] > 0.3 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default-pip.yaml"),
                    help="whose validation split the photos come from (the bundled models' training config)")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--scales", default="1,0.5,0.25,0.125")
    ap.add_argument("--detect-sizes", default="960,320,160,128", help="YuNet input sizes to try")
    ap.add_argument("--busy", action="store_true", help="say in the report that other work shared the CPU")
    ap.add_argument("--no-mediapipe", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "whole_image.md")
    args = ap.parse_args(argv)

    import cv2

    import facepoints
    from facepoints.evaluation.machine import command_line, report_header
    from facepoints.evaluation.metrics import nme
    from facepoints.schemes import IBUG68
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    cv2.setNumThreads(1)
    # the config reader imports torch; with torch loaded first YuNet runs on torch's OpenMP
    # (facepoints.inference.detectors.set_yuface_threads), so 1 thread there too
    import torch

    torch.set_num_threads(1)
    scales = [float(x) for x in args.scales.split(",")]
    sizes = [int(x) for x in args.detect_sizes.split(",")]
    val = [s for s in make_splits(load_config(args.config)).val.samples if s.attributes["source"].startswith("300w")]
    items = canvases(val[:args.limit], scales)
    from compare import MediaPipeWorker, pipeline

    methods = {}
    for model in ("fast", "default"):
        own = facepoints.load(model)
        methods[f"{model}, as it runs by default ({pipeline(own)})"] = own
        for n in sizes:
            for refine, flip in ((0, False), (1, own.flip)):
                p = facepoints.load(model, detector="yunet", detect_size=n, refine=refine, flip=flip)
                methods.setdefault(f"{model}, {pipeline(p)}", p)
        for refine, flip in ((0, False), (1, own.flip)):
            p = facepoints.load(model, detector="blazeface", refine=refine, flip=flip)
            methods.setdefault(f"{model}, {pipeline(p)}", p)
    mp = None
    if not args.no_mediapipe and (ROOT / ".venv-mediapipe" / "bin" / "python").exists():
        mp = MediaPipeWorker(ROOT / ".venv-mediapipe" / "bin" / "python", 10)
    tmp = Path(tempfile.mkdtemp(prefix="facepoints-whole-"))
    names = [*methods] + (["MediaPipe Face Mesh 0.10.21 (468 -> 68), its own detector"] if mp else [])
    pred = {k: [] for k in names}
    ms = {k: [] for k in names}
    for p in methods.values():  # warm-up
        p.predict(items[0][1])
    for i, (sc, img, gt) in enumerate(items):
        for k, p in methods.items():
            t = time.perf_counter()
            faces = p.predict(img)
            ms[k].append((time.perf_counter() - t) * 1000)
            pred[k].append(matched([f.landmarks for f in faces], gt))
        if mp is not None:
            path = tmp / f"{i}.png"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            from facepoints.data.samples import landmark_box

            r = mp(path, landmark_box(gt.astype(np.float32)))
            ms[names[-1]].append(float(np.median(r["ms"])))
            pred[names[-1]].append(None if r["ibug68"] is None else np.asarray(r["ibug68"], np.float64))
    if mp is not None:
        mp.close()
    iod = {sc: np.median([np.linalg.norm(gt[36] - gt[45]) for s2, _, gt in items if s2 == sc]) for sc in scales}
    cmd = command_line(__file__, argv)
    lines = [*report_header("Whole image -> landmarks: detector size, pipeline, small faces, against MediaPipe", cmd,
                            "a training run used both cores meanwhile: read the ratios" if args.busy else
                            "nothing else running"),
             f"{len(val[:args.limit])} held-out 300-W photos "
             f"of `{Path(args.config).name}`'s split, each at scales {', '.join(map(str, scales))} (below 1: pasted on "
             f"a {CANVAS[1]} x {CANVAS[0]} grey canvas). Median inter-ocular distance per scale: "
             + ", ".join(f"{sc}: {iod[sc]:.0f} px" for sc in scales) + ". Found: a face whose landmark box has IoU > 0.3 "
             "with the ground truth's; NME (inter-ocular, %) over the faces found; ms: median per image, all methods "
             "interleaved image by image, 1 thread for ours.", ""]
    head = "| method | " + " | ".join(f"found @{sc}" for sc in scales) + " | " + \
        " | ".join(f"NME @{sc}" for sc in scales) + " | " + " | ".join(f"ms @{sc}" for sc in scales) + " |"
    lines += [head, "|---|" + "---:|" * (3 * len(scales))]
    for k in names:
        cells_f, cells_n, cells_t = [], [], []
        for sc in scales:
            idx = [i for i, it in enumerate(items) if it[0] == sc]
            found = [i for i in idx if pred[k][i] is not None]
            cells_f.append(f"{len(found)}/{len(idx)}")
            if found:
                e = nme(np.stack([pred[k][i] for i in found]), np.stack([items[i][2] for i in found]), IBUG68, "io")
                cells_n.append(f"{e.mean() * 100:.2f}")
            else:
                cells_n.append("-")
            cells_t.append(f"{np.median([ms[k][i] for i in idx]):.1f}")
        lines.append(f"| {k} | " + " | ".join(cells_f + cells_n + cells_t) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
