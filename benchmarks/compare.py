"""Accuracy and CPU speed, side by side with dlib's 68-point model, in one run.

    python benchmarks/compare.py --config configs/default-pip.yaml [--model M]

Accuracy: on the held-out validation split of a training config.
The validation split is the one training held out (whole 300-W photos and whole
YTF persons, by a stable hash): never trained on, never tuned on. Every method sees
the same faces. "GT box" is the standard protocol (crop from the ground-truth
landmarks); for dlib, whose predictor expects its own detector's boxes, the GT box
is mapped to a dlib-style box through the inverse of the dlib-hog calibration in
facepoints.inference.detectors (same information, its own convention).

Speed (one thread, the same images, methods interleaved image by image so that the
shared machine's noise hits all alike): ms per face with the box given (landmarks
only) and ms per whole image (face detector + landmarks). Writes markdown to --out.

MediaPipe (optional): with a MediaPipe environment (numpy<2, so never the main venv;
``python3 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==0.10.21``)
at .venv-mediapipe, or one named by --mediapipe-python, benchmarks/mediapipe_worker.py
runs there as a subprocess (JSON lines) and adds MediaPipe Face Mesh rows: NME of its
468-point mesh mapped to the 68 iBUG points (an approximation of iBUG semantics, so
mapping + model), on the whole image with its own face detector (misses are counted
and reported), and ms per whole image, interleaved with the other methods. Without
that environment MediaPipe is skipped with a note and the output is as before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

import facepoints
from facepoints.data.images import read_image
from facepoints.curation.labeling import dlib_landmarker
from facepoints.data.samples import Dataset, landmark_box
from facepoints.deploy.runners import TorchRunner
from facepoints.inference.predictor import Predictor
from facepoints.evaluation.machine import command_line, report_header
from facepoints.evaluation.evaluate import evaluate
from facepoints.evaluation.metrics import auc, failure_rate, nme
from facepoints.schemes import IBUG68
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits


ADULT_300W = "300-W val (AFW, HELEN and LFPW photos held out)"


def validation_subsets(samples) -> dict[str, list]:
    """The validation faces by kind: adult 300-W photos, infant photos (InfAnFace, a
    300-W-format folder named ``infanface``), YTF persons; empty ones are left out."""
    def infant(s):
        return "infanface" in s.attributes["source"].lower()

    subsets = {
        ADULT_300W: [s for s in samples if s.attributes["source"].startswith("300w:") and not infant(s)],
        "InfAnFace val (infant images held out)": [s for s in samples if infant(s)],
        "YTF val (persons held out)": [s for s in samples if s.attributes["source"].startswith("ytf:")],
    }
    return {k: v for k, v in subsets.items() if v}


def dlib_runner():
    """dlib's 68-point model called with a tight landmark box (mapped to dlib's box
    convention, or with ``own_detector`` its own HOG box of that face), or None
    without dlib."""
    try:
        return dlib_landmarker()
    except ImportError:
        return None


def row(name, pred, gt, seconds):
    """One table row. A face a method missed has NaN points in ``pred``: the faces
    column then says how many were missed, NME is over the faces found, and FR@0.1
    and AUC count the misses as failures."""
    e, ip = nme(pred, gt, IBUG68, "io"), nme(pred, gt, IBUG68, "ip")
    found = np.isfinite(e)
    faces = f"{len(e)}" if found.all() else f"{found.sum()} of {len(e)} ({(~found).sum()} missed)"
    mean = (lambda a: f"{a[found].mean() * 100:.2f}") if found.any() else (lambda a: "-")
    return (f"| {name} | {faces} | {mean(e)} | {mean(ip)} | "
            f"{failure_rate(e) * 100:.2f} | {auc(e):.4f} | {seconds * 1000 / len(e):.1f} |")


REPO = Path(__file__).resolve().parent.parent
MEDIAPIPE_SETUP = "python3 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==0.10.21"


class MediaPipeWorker:
    """benchmarks/mediapipe_worker.py --serve, run by the MediaPipe venv's python
    (MediaPipe pins numpy<2): one JSON request per image, timed inside the worker
    (``fm.process`` on the decoded image, the same scope as the other methods' timings)."""

    def __init__(self, python, max_faces):
        import tempfile

        self.python = str(python)
        self.log = tempfile.TemporaryFile(mode="w+")  # MediaPipe logs a lot to stderr
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [self.python, str(REPO / "benchmarks" / "mediapipe_worker.py"), "--serve", "--max-faces", str(max_faces)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.info = self._read()
        self.cpu_ms, self.wall_ms = 0.0, 0.0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            self.log.seek(0)
            tail = "\n".join(self.log.read().strip().splitlines()[-15:])
            raise RuntimeError(f"MediaPipe worker ({self.python}) exited with {rc}:\n{tail}")
        return json.loads(line)

    def __call__(self, image, box=None) -> dict:
        """MediaPipe on the whole image; ``box`` (a tight GT landmark box) picks the face."""
        req = {"path": str(image), "box": None if box is None else [float(v) for v in box]}
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died: _read reports its exit status and last log lines
        r = self._read()
        if r.get("error"):
            raise RuntimeError(f"MediaPipe worker: {r.get('path', '?')}: {r['error']}")
        self.cpu_ms += sum(r["cpu_ms"])
        self.wall_ms += sum(r["ms"])
        return r

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def mediapipe_worker(args):
    """The worker, or None (with a printed note) when MediaPipe is not set up."""
    if args.no_mediapipe:
        return None
    python = args.mediapipe_python
    if python is None:
        python = REPO / ".venv-mediapipe" / "bin" / "python"
        if not python.exists():
            print(f"note: MediaPipe skipped: no {python.relative_to(REPO)} (set it up with: {MEDIAPIPE_SETUP})",
                  flush=True)
            return None
    elif not Path(python).exists():
        raise SystemExit(f"--mediapipe-python {python}: no such file")
    mp = MediaPipeWorker(python, args.mediapipe_max_faces)
    print(f"MediaPipe {mp.info['mediapipe']} via {python}", flush=True)
    return mp


def mediapipe_rows(mp, samples, images, boxes, gt) -> list[str]:
    """MediaPipe's row (its 468 points mapped to 68, whole image, its own detector, the
    face matched to the GT face by IoU) and a line that accounts for every miss."""
    pred = np.full(gt.shape, np.nan)
    seconds, no_face, other_face = 0.0, 0, 0
    for i, (s, img, box) in enumerate(zip(samples, images, boxes)):
        r = mp(s.image, box)
        if (r["height"], r["width"]) != img.shape[:2]:
            raise RuntimeError(f"{s.image}: MediaPipe worker decoded {r['width']}x{r['height']}, "
                               f"facepoints {img.shape[1]}x{img.shape[0]}")
        seconds += r["ms_median"] / 1000
        if r["ibug68"] is not None:
            pred[i] = r["ibug68"]
        elif r["n_faces"]:
            other_face += 1
        else:
            no_face += 1
    line = row("MediaPipe Face Mesh, 468 -> 68 mapped (whole image, its own detector)", pred, gt, seconds)
    note = (f"\nMediaPipe: no face found in {no_face} of {len(samples)} images; faces found but none on the "
            f"GT face (mapped-box IoU <= 0.3) in {other_face}. NME over the faces found; FR@0.1 and AUC count "
            "misses as failures; ms per whole image (detection + mesh).")
    return [line + " (ms per whole image: its detection + mesh)", note]


FAST = "fast model (--fast-model)"


def pose_section(args, dlib, mp) -> list[str]:
    """The AFLW2000-3D protocol (ground-truth boxes; MediaPipe on the whole image, on the
    faces it finds) for every method, on ``--pose-set``."""
    from facepoints.data.formats import read_dataset
    from facepoints.evaluation.metrics import POSE_BUCKETS, pose_protocol

    ds = read_dataset(f"300w:{args.pose_set}")
    samples = ds.samples[: args.limit] if args.limit else ds.samples
    gt = np.stack([s.landmarks for s in samples])
    yaws = np.array([s.attributes["yaw"] for s in samples])
    images = [read_image(s.image) for s in samples]
    boxes = [landmark_box(s.landmarks) for s in samples]
    heads = " | ".join(f"{lo:.0f}-{hi:.0f}" for lo, hi in POSE_BUCKETS)
    lines = [f"\n### Large poses: {args.pose_set} (AFLW2000-3D protocol: NME by the landmark box, %)\n",
             f"| method | faces | {heads} | balanced |", "|---|---:|" + "---:|" * (len(POSE_BUCKETS) + 1)]

    def add(name, pred):
        e = nme(pred, gt, IBUG68, "box")
        found = np.isfinite(e)
        p = pose_protocol(e, yaws)
        cells = " | ".join(f"{p[f'{lo:.0f}-{hi:.0f}']:.2f}" if f"{lo:.0f}-{hi:.0f}" in p else "-"
                           for lo, hi in POSE_BUCKETS)
        counts = "/".join(str(p[f"n {lo:.0f}-{hi:.0f}"]) for lo, hi in POSE_BUCKETS)
        faces = f"{found.sum()}" if found.all() else f"{found.sum()} of {len(e)} (found per bucket {counts})"
        lines.append(f"| {name} | {faces} | {cells} | {p.get('balanced', float('nan')):.2f} |")

    runs = [("facepoints default (GT box)", args.model)]
    if args.fast_model:
        runs.append((f"{FAST} (GT box)", args.fast_model))
    for name, model_file in runs:
        p = facepoints.load(model_file, detector=None, threads=1, flip=False, refine=0)
        add(name, np.stack([p.landmarks_in_boxes(img, b[None])[0] for img, b in zip(images, boxes)]))
    if dlib is not None:
        add("dlib 68-point ERT (GT-derived box)", np.stack([dlib(img, b, own_detector=False)
                                                            for img, b in zip(images, boxes)]))
    if mp is not None:
        pred = np.full(gt.shape, np.nan)
        for i, (s, b) in enumerate(zip(samples, boxes)):
            r = mp(s.image, b)
            if r["ibug68"] is not None:
                pred[i] = r["ibug68"]
        add("MediaPipe Face Mesh, 468 -> 68 mapped (whole image, on the faces it finds)", pred)
    print("\n".join(lines), flush=True)
    return lines


def pipeline(p) -> str:
    """How a predictor runs the whole image, in words."""
    det = p.detector
    where = "BlazeFace (128 px)" if det.name == "blazeface" else f"YuNet at {det.max_side or 'full'} px"
    return f"{where}, {'flip' if p.flip else 'no flip'}, refine {p.refine}"


def speed(args, samples, dlib, mp=None) -> list[str]:
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

    def onnx_of(model_file):
        model, info = load_model(model_file)
        fused = fuse_batchnorm(model)[0]
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        write_onnx(fused, info, path)
        return model, info, fused, path

    model, info, fused, onnx_path = onnx_of(args.model)
    per_face = {
        "facepoints PyTorch fp32": Predictor(TorchRunner(model, threads=1), info, detector=None, flip=False),
        "facepoints PyTorch fp32, BN fused": Predictor(TorchRunner(fused, threads=1), info, detector=None,
                                                       flip=False),
        "facepoints ONNX Runtime fp32": facepoints.load(onnx_path, detector=None, threads=1, flip=False),
        "facepoints ONNX Runtime fp32 + flip TTA": facepoints.load(onnx_path, detector=None, threads=1, flip=True),
    }
    own_default = facepoints.load(onnx_path, threads=1)
    per_image = {
        f"facepoints: as it runs by default ({pipeline(own_default)})": own_default,
        "facepoints: YuNet + ONNX Runtime, flip TTA, refine 1":
            facepoints.load(onnx_path, detector="yunet", threads=1, flip=True, refine=1),
        "facepoints: YuNet + ONNX Runtime, no flip, refine 0":
            facepoints.load(onnx_path, detector="yunet", threads=1, flip=False, refine=0),
    }
    per_image["facepoints: BlazeFace + ONNX Runtime, flip TTA, refine 1 (--detector blazeface)"] = \
        facepoints.load(onnx_path, detector="blazeface", threads=1, flip=True, refine=1)
    per_image["facepoints: BlazeFace + ONNX Runtime, no flip, refine 0 (--detector blazeface --no-flip --refine 0)"] = \
        facepoints.load(onnx_path, detector="blazeface", threads=1, flip=False, refine=0)
    for n in args.detect_sizes:
        per_image[f"facepoints: YuNet at {n} px + ONNX Runtime, flip TTA, refine 1 (--detect-size {n})"] = \
            facepoints.load(onnx_path, detector="yunet", threads=1, flip=True, refine=1, detect_size=n)
        per_image[f"facepoints: YuNet at {n} px + ONNX Runtime, no flip, refine 0"] = \
            facepoints.load(onnx_path, detector="yunet", threads=1, flip=False, refine=0, detect_size=n)
    if args.fast_model:
        fast_onnx = onnx_of(args.fast_model)[3]
        per_face[f"{FAST} ONNX Runtime fp32"] = facepoints.load(fast_onnx, detector=None, threads=1, flip=False)
        own = facepoints.load(fast_onnx, threads=1)
        per_image[f"{FAST}: as it runs by default ({pipeline(own)})"] = own
        per_image[f"{FAST}: YuNet + ONNX Runtime, no flip, refine 0"] = facepoints.load(
            fast_onnx, detector="yunet", threads=1, flip=False, refine=0)
        for n in args.detect_sizes:
            per_image[f"{FAST}: YuNet at {n} px + ONNX Runtime, no flip, refine 0"] = facepoints.load(
                fast_onnx, detector="yunet", threads=1, flip=False, refine=0, detect_size=n)
    try:  # the optional OpenVINO runtime (bf16 on CPUs with AMX), where installed
        import openvino  # noqa: F401

        per_face["facepoints OpenVINO (--runtime openvino)"] = facepoints.load(
            onnx_path, detector=None, threads=1, flip=False, runtime="openvino")
        ov_default = facepoints.load(onnx_path, threads=1, runtime="openvino")
        per_image[f"facepoints: as it runs by default, OpenVINO (--runtime openvino; {pipeline(ov_default)})"] = \
            ov_default
        if args.fast_model:
            per_face[f"{FAST} OpenVINO (--runtime openvino)"] = facepoints.load(
                fast_onnx, detector=None, threads=1, flip=False, runtime="openvino")
    except ImportError:
        pass
    times = {k: [] for k in [*per_face, *per_image]}
    dlib_face, dlib_image, mp_image = [], [], []
    for rep in range(2):  # the first pass warms up; only the second is timed
        for s, img, box in zip(samples, images, boxes):
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
                dlib(img, box, own_detector=False)
                dlib_face.append(time.perf_counter() - t)
                t = time.perf_counter()
                for b in dlib.hog_boxes(img):
                    dlib.raw(img, b)
                dlib_image.append(time.perf_counter() - t)
            if mp is not None:  # timed inside the worker: fm.process on the decoded image
                mp_image.append(mp(s.image)["ms"][0] / 1000)
        if rep == 0:
            times = {k: [] for k in times}
            dlib_face, dlib_image, mp_image = [], [], []
            if mp is not None:
                mp.cpu_ms = mp.wall_ms = 0.0
    ms = {k: np.median(v) * 1000 for k, v in times.items()}
    ref_face = np.median(dlib_face) * 1000 if dlib_face else None
    ref_image = np.median(dlib_image) * 1000 if dlib_image else None
    ref_mp = np.median(mp_image) * 1000 if mp_image else None
    out = [f"\n### CPU speed, 1 thread, median over {len(images)} 300-W validation images\n",
           "| method | ms per face (box given) | ms per image (detector + landmarks) | ratio to dlib | "
           "ratio to MediaPipe (per image) |",
           "|---|---:|---:|---:|---:|"]
    for k in per_face:
        ratio = f"{ms[k] / ref_face:.2f}x" if ref_face else "-"
        out.append(f"| {k} | {ms[k]:.2f} | - | {ratio} | - |")
    for k in per_image:
        ratio = f"{ms[k] / ref_image:.2f}x" if ref_image else "-"
        to_mp = f"{ms[k] / ref_mp:.2f}x" if ref_mp else "-"
        out.append(f"| {k} | - | {ms[k]:.2f} | {ratio} | {to_mp} |")
    if ref_face:
        to_mp = f"{ref_image / ref_mp:.2f}x" if ref_mp else "-"
        out.append(f"| dlib 68-point ERT (HOG detector, upsample 1) | {ref_face:.2f} | {ref_image:.2f} | 1.00x | {to_mp} |")
    if ref_mp:
        ratio = f"{ref_mp / ref_image:.2f}x" if ref_image else "-"
        out.append(f"| MediaPipe Face Mesh (BlazeFace short range + 468-point mesh, "
                   f"max {mp.info['settings']['max_num_faces']} faces) | - | {ref_mp:.2f} | {ratio} | 1.00x |")
        out.append(f"\nMediaPipe runs in its own process (TFLite XNNPACK, MediaPipe's default of 1 thread on "
                   f"Linux; the legacy API has no thread option); its CPU time over its wall time in the timed "
                   f"pass: {mp.cpu_ms / max(mp.wall_ms, 1e-9):.2f} (at most 1 means one busy thread).")
    print("\n".join(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default-pip.yaml")
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--out", default="benchmarks/compare.md")
    ap.add_argument("--fast-model", default=None, help="a second, faster model file to measure beside --model")
    ap.add_argument("--speed-images", type=int, default=60, help="images for the speed section (0: skip it)")
    ap.add_argument("--no-dlib", action="store_true", help="leave dlib out")
    ap.add_argument("--detect-sizes", type=lambda v: [int(x) for x in v.split(",") if x], default=[320],
                    help="also run the whole pipeline with YuNet on the image downscaled to these longest sides "
                         "(comma-separated; '' for none)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many faces per subset")
    ap.add_argument("--mediapipe-python", default=None,
                    help="python of a MediaPipe venv (default: .venv-mediapipe/bin/python if it exists, "
                         "else MediaPipe is skipped)")
    ap.add_argument("--no-mediapipe", action="store_true", help="leave MediaPipe out")
    ap.add_argument("--mediapipe-max-faces", type=int, default=10,
                    help="MediaPipe FaceMesh max_num_faces (all faces of an image, like the other detectors)")
    ap.add_argument("--pose-set", default=None, help="a 300-W folder with yaw.csv (AFLW2000-3D's dev half): the "
                    "large-pose protocol (NME by the landmark box per |yaw| bucket, balanced mean) for every method")
    args = ap.parse_args()

    cfg = load_config(args.config)
    val = make_splits(cfg).val
    subsets = validation_subsets(val.samples)
    variants = {
        "facepoints, no flip (GT box)": dict(refine=0, flip=False),
        "facepoints + flip TTA (GT box)": dict(refine=0, flip=True),
    }
    dlib = None if args.no_dlib else dlib_runner()
    mp = mediapipe_worker(args)
    lines = []
    for title, samples in subsets.items():
        samples = samples[: args.limit] if args.limit else samples
        if not samples:
            continue
        gt = np.stack([s.landmarks for s in samples])
        images = [read_image(s.image) for s in samples]
        boxes = [landmark_box(s.landmarks) for s in samples]
        start = len(lines) + 3
        lines += [f"\n### {title}\n", "| method | faces | NME io % | NME ip % | FR@0.1 % | AUC@0.1 | ms/face |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        runs = [(name, args.model, kw) for name, kw in variants.items()]
        if args.fast_model:
            runs.append((f"{FAST}, no flip (GT box)", args.fast_model, dict(refine=0, flip=False)))
        for name, model_file, kw in runs:
            p = facepoints.load(model_file, detector=None, threads=1, **kw)
            t = time.perf_counter()
            pred = np.stack([p.landmarks_in_boxes(img, b[None])[0] for img, b in zip(images, boxes)])
            lines.append(row(name, pred, gt, time.perf_counter() - t))
        own_default = facepoints.load(args.model, threads=1)
        whole = [(f"facepoints, as it runs by default: {pipeline(own_default)} (whole image)", own_default)]
        seen = {pipeline(own_default)}
        others = [facepoints.load(args.model, detector="yunet", threads=1, detect_size=n)  # the model's flip, refine
                  for n in [None, *args.detect_sizes]]
        others.append(facepoints.load(args.model, detector="blazeface", threads=1, flip=False, refine=0))
        for p in others:
            if pipeline(p) not in seen:  # the default pipeline is measured once
                seen.add(pipeline(p))
                whole.append((f"facepoints, {pipeline(p)} (whole image)", p))
        if args.fast_model:
            own = facepoints.load(args.fast_model, threads=1)
            whole.append((f"{FAST}, as it runs by default: {pipeline(own)} (whole image)", own))
        for name, p in whole:
            t = time.perf_counter()
            ev = evaluate(Dataset(title, IBUG68, samples), p, use_detector=True)
            lines.append(row(name, ev.predictions, gt, time.perf_counter() - t) + " (ms include detection)")
        if dlib is not None:
            t = time.perf_counter()
            pred = np.stack([dlib(img, b, own_detector=False) for img, b in zip(images, boxes)])
            lines.append(row("dlib 68-point ERT (GT-derived box)", pred, gt, time.perf_counter() - t))
            t = time.perf_counter()
            pred = np.stack([dlib(img, b, own_detector=True) for img, b in zip(images, boxes)])
            lines.append(row("dlib 68-point ERT (its HOG box matched to the GT face)", pred, gt,
                             time.perf_counter() - t) + " (ms include HOG detection)")
        if mp is not None:
            lines += mediapipe_rows(mp, samples, images, boxes, gt)
        print("\n".join(lines[start:]), flush=True)

    if args.pose_set:
        lines += pose_section(args, dlib, mp)
    if args.speed_images:
        lines += speed(args, subsets[ADULT_300W][: args.speed_images], dlib, mp)
    if mp is not None:
        mp.close()
    head = report_header(f"facepoints vs dlib{' and MediaPipe' if mp else ''}: accuracy on the validation split, CPU speed",
                         command_line(__file__), "timings with 1 thread, shared machine (indicative only)") + [
        f"Model: {args.model or 'bundled default'}"
        + (f"; fast model: `{args.fast_model}`" if args.fast_model else "") + f"; split from `{args.config}` (seed {cfg.seed}, val_fraction {cfg.data.val_fraction}).",
        "NME in percent of the outer-eye-corner distance (io) or the eye-centre distance (ip).",
    ]
    if mp is not None:
        st = mp.info["settings"]
        head[-1] += "  "
        head += [
            f"MediaPipe: `mp.solutions.face_mesh.FaceMesh` {mp.info['mediapipe']} (static images, max_num_faces "
            f"{st['max_num_faces']}, refine_landmarks {st['refine_landmarks']}) in its own environment "
            f"(it pins numpy<2: `{MEDIAPIPE_SETUP}`; this script uses `.venv-mediapipe` when it exists, or "
            "`--mediapipe-python`), through `benchmarks/mediapipe_worker.py`. It is given the whole image and "
            "finds faces itself (its BlazeFace short-range detector); the face whose mapped 68-point box best "
            "overlaps the GT face (IoU > 0.3) is scored, and images where it finds no such face count as misses "
            "(NME over the faces found, FR@0.1 and AUC with misses as failures). Its 68 points are mapped from "
            "the 468-point mesh (a commonly used correspondence table, in the worker): approximations of iBUG "
            "semantics, the jaw line especially, so its NME measures mapping + model, not the model alone.",
        ]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
