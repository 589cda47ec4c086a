"""Numeric precision against speed and accuracy, on the same faces in one run.

    python benchmarks/precision.py [--config configs/default-pip.yaml] [--model M] \\
        [--limit 300] [--calibration-faces 100] [--out benchmarks/precision.md]

Methods, all fed the same crops one face at a time (batch 1, 1 thread, no flip):
ONNX Runtime fp32 (the `facepoints export --format onnx` file), ONNX Runtime int8 in
three forms (static quantisation, calibrated on faces of the *training* split: QDQ with
int8 activations, QDQ with uint8 activations, QOperator with uint8 activations; weights
int8 per channel, the PIP decoding kept fp32), OpenVINO on the same ONNX file at fp32 and
bf16 (where ``openvino`` is installed; bf16 is what it picks by itself on a CPU with AMX), PyTorch fp32, PyTorch bf16 and fp16 (``torch.autocast`` on the
CPU; the weights stay fp32).

Accuracy: NME (inter-ocular, %) on ``--limit`` faces of the validation split of the
config (`facepoints.training.loop.make_splits`), cropped from the ground-truth landmark
boxes as benchmarks/compare.py does (``Predictor.landmarks_in_boxes``). The int8
calibration faces come from ``.train`` only, never from ``.val``.

Speed: ms per face (crop + network + un-crop, box given), median over the validation
faces; the methods take turns face by face, in a rotating order, so the shared
machine's noise hits all alike. The first faces are a warm-up and not timed.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facepoints.evaluation.machine import command_line, report_header

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 3


class OpenVinoRunner:
    """An ONNX file compiled by OpenVINO for the CPU, one thread, at a given inference
    precision (OpenVINO's own default is bf16 on CPUs with AMX / AVX-512 BF16): a Predictor backend."""

    def __init__(self, path, precision):
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY",
                                                              "INFERENCE_PRECISION_HINT": precision})
        self.request, self.output = compiled.create_infer_request(), compiled.outputs[0]

    def __call__(self, batch):
        return self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[self.output]


class AutocastRunner:
    """A PyTorch model under ``torch.autocast("cpu", dtype)``: a Predictor backend."""

    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype

    def __call__(self, batch):
        import torch

        with torch.no_grad(), torch.autocast("cpu", dtype=self.dtype):
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default-pip.yaml")
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--limit", type=int, default=300, help="validation faces (a seeded random subset)")
    ap.add_argument("--calibration-faces", type=int, default=100, help="int8 calibration faces from the training split")
    ap.add_argument("--out", default="benchmarks/precision.md")
    args = ap.parse_args()
    os.chdir(ROOT)  # the configs name ../shared/data relative to the repository root
    if not (ROOT.parent / "shared" / "data").is_dir():
        print(f"{ROOT.parent / 'shared' / 'data'} is not here: this benchmark needs the 300-W / YTF data; nothing measured")
        sys.exit(2)

    import cv2
    import torch

    from facepoints.data.images import read_image
    from facepoints.data.samples import landmark_box
    from facepoints.deploy.export import write_onnx
    from facepoints.deploy.runners import TorchRunner
    from facepoints.inference.predictor import Predictor
    from facepoints.inference.runtime import OnnxRunner
    from facepoints.evaluation.metrics import nme
    from facepoints.models.package import BUNDLED, load_model
    from facepoints.optimize.quantize import crops_from_samples, int8_info, int8_scheme, quantize_onnx
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = load_config(args.config)
    splits = make_splits(cfg)
    rng = np.random.default_rng(0)
    val = splits.val.samples
    if args.limit and args.limit < len(val):
        val = [val[i] for i in np.sort(rng.choice(len(val), args.limit, replace=False))]
    scheme = splits.val.scheme
    model, info = load_model(args.model)
    model_path = Path(args.model) if args.model else BUNDLED

    tmp = Path(tempfile.mkdtemp(prefix="facepoints-precision-"))
    atexit.register(shutil.rmtree, tmp, True)
    # the landmark network alone in every file (the trust outputs' cost: trust_cost.md)
    fp32_onnx = write_onnx(model, info, tmp / "fp32.onnx", trust=False)
    dense_onnx = write_onnx(model, info, tmp / "fp32-dense.onnx", trust=False, dense=True)  # what int8 quantises
    t = time.perf_counter()
    crops, used = crops_from_samples(model, info, splits.train.samples, args.calibration_faces, seed=cfg.seed)
    note = f"{used} faces of the training split of {args.config} (ground-truth boxes), {len(crops)} crops"
    int8 = {}
    for fmt, act in (("qdq", "int8"), ("qdq", "uint8"), ("qoperator", "uint8")):
        int8[fmt, act] = quantize_onnx(dense_onnx, tmp / f"int8-{fmt}-{act}.onnx", crops,
                                       int8_info(info, note, len(crops), fmt=fmt, activations=act),
                                       fmt=fmt, activations=act)
    quant_s = time.perf_counter() - t
    print(f"int8: calibrated on {note} in {quant_s:.1f} s", flush=True)

    def pred(run):
        return Predictor(run, info, detector=None, refine=0, flip=False)

    mb = lambda p: f"{p.stat().st_size / 1e6:.1f}"  # noqa: E731
    methods = {
        "ONNX Runtime fp32": (pred(OnnxRunner(fp32_onnx, threads=1)), f"{mb(fp32_onnx)} (.onnx)"),
        **{"ONNX Runtime int8 ({}, {}, per-channel)".format(*int8_scheme(f, a)):
           (pred(OnnxRunner(path, threads=1)), f"{mb(path)} (.onnx)") for (f, a), path in int8.items()},
        "OpenVINO fp32 (CPU plugin, precision hint f32)": (lambda: pred(OpenVinoRunner(fp32_onnx, "f32")),
                                                           f"{mb(fp32_onnx)} (.onnx)"),
        "OpenVINO bf16 (precision hint bf16; its default on AMX CPUs, `runtime=\"openvino\"`)": (
            lambda: pred(OpenVinoRunner(fp32_onnx, "bf16")), f"{mb(fp32_onnx)} (.onnx)"),
        "PyTorch fp32": (pred(TorchRunner(model)), f"{mb(model_path)} (.safetensors)"),
        "PyTorch bf16 (autocast, CPU)": (pred(AutocastRunner(model, torch.bfloat16)), "same fp32 file"),
        "PyTorch fp16 (autocast, CPU)": (pred(AutocastRunner(model, torch.float16)), "same fp32 file"),
    }
    failed = {}
    img0, box0 = read_image(val[0].image), landmark_box(val[0].landmarks)
    for name in list(methods):
        try:
            if callable(methods[name][0]) and not isinstance(methods[name][0], Predictor):  # made here: may not install
                methods[name] = (methods[name][0](), methods[name][1])
            out = methods[name][0].landmarks_in_boxes(img0, box0[None])
            if not np.isfinite(out).all():
                raise RuntimeError("non-finite landmarks")
        except Exception as e:  # e.g. fp16 kernels missing on this CPU / torch build
            failed[name] = f"{e.__class__.__name__}: {str(e)[:200]}"
            del methods[name]
            print(f"{name}: does not run here ({failed[name]})", flush=True)

    names = list(methods)
    preds = {k: [] for k in names}
    times = {k: [] for k in names}
    t0 = time.perf_counter()
    for i, s in enumerate(val):
        img, box = read_image(s.image), landmark_box(s.landmarks)[None]
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t = time.perf_counter()
            p = methods[name][0].landmarks_in_boxes(img, box)[0]
            dt = time.perf_counter() - t
            preds[name].append(p)
            if i >= WARMUP:
                times[name].append(dt)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(val)} faces, {time.perf_counter() - t0:.0f} s", flush=True)

    gt = np.stack([s.landmarks for s in val])
    sources = np.array([s.attributes.get("source", "") for s in val])
    subsets = {"300-W val": np.char.startswith(sources, "300w:"), "YTF val": np.char.startswith(sources, "ytf:")}
    ref = np.stack(preds["PyTorch fp32"]) if "PyTorch fp32" in preds else None
    a, b = scheme.outer_eye_corners
    io = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    rows = ["| method | model file MB | ms per face (median, 1 thread) | NME io % (all) | "
            + " | ".join(f"{k} ({int(m.sum())})" for k, m in subsets.items())
            + " | mean distance to PyTorch fp32, % io | max coordinate difference to PyTorch fp32, px |",
            "|---|---|---:|---:|" + "---:|" * len(subsets) + "---:|---:|"]
    for name in names:
        p = np.stack(preds[name])
        e = nme(p, gt, scheme, "io") * 100
        sub = " | ".join(f"{e[m].mean():.2f}" if m.any() else "-" for m in subsets.values())
        if ref is not None:
            dist = 100 * np.mean(np.linalg.norm(p - ref, axis=-1).mean(1) / io)
            dmax = np.abs(p - ref).max()
            vs = f"{dist:.3f} | {dmax:.3f}"
        else:
            vs = "- | -"
        rows.append(f"| {name} | {methods[name][1]} | {np.median(times[name]) * 1000:.2f} | {e.mean():.2f} | {sub} | {vs} |")
    for name, why in failed.items():
        rows.append(f"| {name} | - | does not run on this CPU / torch build: {why} | | " + "| " * len(subsets) + "| |")
    print("\n".join(rows))

    cmd = command_line(__file__)
    head = report_header("Numeric precision: speed, accuracy and size, same faces, one run", cmd,
                         "shared machine, timings with 1 thread, indicative only") + [
        f"Model: {args.model or 'bundled default'} ({info.backbone}, {info.input_size} px input); "
        f"split from `{args.config}` (seed {cfg.seed}, val_fraction {cfg.data.val_fraction}).\n",
        f"Faces: {len(val)} of the {len(splits.val.samples)} validation faces (seeded random subset), "
        "cropped from the ground-truth landmark boxes, no flip averaging, no refinement; every method sees the same crops. "
        f"int8 calibration: {note} (training split only; the validation faces are never used), "
        f"MinMax ranges, {quant_s:.0f} s. "
        "The ONNX files hold the landmark network alone (exported without trust outputs: their cost is "
        "benchmarks/trust_cost.md's). "
        f"Speed: crop + network + un-crop per face, batch 1, median of {len(val) - WARMUP} faces after "
        f"{WARMUP} warm-up faces, methods interleaved face by face in a rotating order. "
        "bf16/fp16: `torch.autocast('cpu', dtype)` around the fp32 model (the weights stay fp32 on disk, so the file "
        "is the fp32 one). NME in percent of the ground-truth outer-eye-corner distance; the last two columns compare "
        "each method with PyTorch fp32 on the same faces (mean point distance in % of the inter-ocular distance, and "
        "the largest single coordinate difference in image pixels).\n",
    ]
    Path(args.out).write_text("\n".join(head + rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
