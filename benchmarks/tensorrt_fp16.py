"""TensorRT fp16 on an NVIDIA GPU: build an engine from the ONNX export, check it, time it.

    pip install tensorrt                      # needs an NVIDIA GPU and driver
    python benchmarks/tensorrt_fp16.py [--model M.safetensors | --onnx M.onnx] [--batch 32] \\
        [--images PHOTOS... | --dataset FORMAT:PATH] [--faces 64] [--engine model.plan] [--out tensorrt.md]

What it does:

1. exports the model to ONNX as ``facepoints export --format onnx`` does (or takes ``--onnx``);
2. builds a TensorRT engine with fp16 enabled (TensorRT Python API; dynamic batch
   1..``--batch``), optionally saving it (``--engine``);
3. makes network inputs exactly as the Predictor does (face detector + refinement on
   the example photos by default, or ground-truth boxes of ``--dataset``, mirrored
   copies included when the model uses flip averaging);
4. runs them through the engine and through ONNX Runtime fp32 on the CPU, and compares
   the landmarks: largest coordinate difference and mean point distance in pixels of
   the crop, and the mean distance in percent of the inter-ocular distance; above
   ``--max-nme-change`` (1 point, the bar ``facepoints export --int8`` uses) it exits 1;
5. times the engine: median ms per batch and per face at batch 1 and at ``--batch``
   (CUDA-synchronised, after a warm-up).

Without a CUDA GPU or without the ``tensorrt`` package it says so and exits with
status 2, having measured nothing. It has not been run on this project's machines
(they have no GPU); its numbers exist only where someone has run it on one.
(The file is not called ``tensorrt.py``: run as a script, that name would shadow the
``tensorrt`` package it imports.)
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facepoints.evaluation.machine import command_line, report_header

NOT_RUN = 2


def missing_requirements() -> list[str]:
    """Why this cannot run here (empty when it can). Cheap: builds nothing."""
    problems = []
    try:
        import torch

        gpu = torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception as e:  # a broken CUDA install shows up here
        gpu = False
        problems.append(f"torch cannot query CUDA ({e.__class__.__name__}: {str(e)[:120]})")
    if not gpu:
        smi = shutil.which("nvidia-smi")
        problems.append("no CUDA GPU visible (torch.cuda.is_available() is False"
                        + (", although nvidia-smi exists: check the driver / CUDA build of torch)" if smi else
                           "; no nvidia-smi either)"))
    if importlib.util.find_spec("tensorrt") is None:
        problems.append("the tensorrt Python package is not installed (pip install tensorrt)")
    elif not problems:
        import tensorrt as trt

        major_minor = tuple(int(v) for v in trt.__version__.split(".")[:2])
        if major_minor < (8, 6):
            problems.append(f"TensorRT {trt.__version__} is too old: the tensor I/O API needs 8.6 or newer")
    return problems


def build_engine(onnx_path: Path, input_size: int, max_batch: int, log):
    """``(engine, serialised plan, runtime)``: an fp16 TensorRT engine for the ONNX file
    (dynamic batch 1..max_batch)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if not getattr(builder, "platform_has_fast_fp16", True):
        log("warning: this GPU has no fast fp16; building with fp16 allowed anyway")
    config.set_flag(trt.BuilderFlag.FP16)
    name = network.get_input(0).name
    profile = builder.create_optimization_profile()
    s = input_size
    profile.set_shape(name, (1, 3, s, s), (max_batch, 3, s, s), (max_batch, 3, s, s))
    config.add_optimization_profile(profile)
    t = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    log(f"engine built in {time.perf_counter() - t:.1f} s")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT could not deserialise the engine it built")
    return engine, bytes(plan), runtime  # keep the runtime alive as long as the engine


class TrtRunner:
    """``run(batch) -> landmarks`` on a TensorRT engine, I/O buffers as torch CUDA tensors
    (no pycuda / cuda-python needed), run on torch's current CUDA stream."""

    def __init__(self, engine):
        import tensorrt as trt
        import torch

        self.torch, self.engine = torch, engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def run_device(self, x):
        """``x``: a float32 CUDA tensor; returns the output CUDA tensor (not synchronised)."""
        torch = self.torch
        self.context.set_input_shape(self.input, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        out = self.run_device(x)
        self.torch.cuda.synchronize()
        return out.cpu().numpy()


def time_engine(runner: TrtRunner, crops: np.ndarray, batch: int, repeats: int) -> float:
    """Median ms per call for a batch of ``batch`` crops (input already on the GPU)."""
    torch = runner.torch
    idx = np.arange(batch) % len(crops)
    x = torch.from_numpy(np.ascontiguousarray(crops[idx])).cuda()
    for _ in range(10):
        runner.run_device(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        runner.run_device(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="facepoints .safetensors model (default: the bundled one)")
    ap.add_argument("--onnx", default=None, help="use this exported .onnx instead of exporting --model")
    ap.add_argument("--batch", type=int, default=32, help="largest batch of the engine, and the timed batch")
    ap.add_argument("--images", nargs="*", default=None, help="photos or folders (default: examples/)")
    ap.add_argument("--dataset", default=None, help="FORMAT:PATH dataset instead of photos (ground-truth boxes)")
    ap.add_argument("--faces", type=int, default=64, help="at most this many faces")
    ap.add_argument("--repeats", type=int, default=100, help="timed runs per batch size")
    ap.add_argument("--max-nme-change", type=float, default=1.0,
                    help="largest mean landmark distance to ONNX Runtime fp32, %% of the inter-ocular distance")
    ap.add_argument("--engine", default=None, help="also save the serialised engine here")
    ap.add_argument("--out", default=None, help="write the results as markdown here")
    args = ap.parse_args()

    problems = missing_requirements()
    if problems:
        print("benchmarks/tensorrt_fp16.py cannot run on this machine, nothing was measured:\n  - "
              + "\n  - ".join(problems)
              + "\nIt needs an NVIDIA GPU with its driver, a CUDA build of torch and `pip install tensorrt`.",
              file=sys.stderr)
        return NOT_RUN

    import tensorrt as trt
    import torch

    from facepoints.deploy.export import write_onnx
    from facepoints.inference.runtime import OnnxRunner
    from facepoints.models.package import load_model
    from facepoints.optimize.quantize import calibration_crops

    log = lambda m: print(m, flush=True)  # noqa: E731
    model, info = load_model(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="facepoints-trt-"))
    atexit.register(shutil.rmtree, tmp, True)
    # the landmark network alone (a file with trust outputs holds them under an If on an optional input)
    onnx_path = Path(args.onnx) if args.onnx else write_onnx(model, info, tmp / "model.onnx", trust=False)
    if args.onnx:
        info = OnnxRunner(onnx_path).info()
    crops, note = calibration_crops(model, info, dataset=args.dataset, photos=args.images, faces=args.faces)
    log(f"inputs: {note}")

    engine, plan, _runtime = build_engine(onnx_path, info.input_size, max(args.batch, 1), log)
    if args.engine:
        Path(args.engine).write_bytes(plan)
        log(f"wrote {args.engine} ({len(plan) / 1e6:.1f} MB)")
    trt_run, ort_run = TrtRunner(engine), OnnxRunner(onnx_path, threads=1)
    s = info.input_size - 1
    got = np.concatenate([trt_run(crops[i:i + args.batch]) for i in range(0, len(crops), args.batch)]) * s
    ref = ort_run(crops) * s
    scheme = info.landmark_scheme
    a, b = scheme.outer_eye_corners or (None, None)
    dist = np.linalg.norm(got - ref, axis=-1).mean(axis=1)
    max_px = float(np.abs(got - ref).max())
    if a is not None:
        io = np.linalg.norm(ref[:, a] - ref[:, b], axis=-1)
        change, norm = float(100 * np.mean(dist / np.maximum(io, 1e-6))), "inter-ocular"
    else:
        change, norm = float(100 * np.mean(dist / s)), "crop size"
    ms1 = time_engine(trt_run, crops, 1, args.repeats)
    msb = time_engine(trt_run, crops, args.batch, args.repeats)
    ok = np.isfinite(got).all() and change <= args.max_nme_change
    gpu = torch.cuda.get_device_name(0)
    lines = report_header("TensorRT fp16 vs ONNX Runtime fp32", command_line(__file__),
                          f"TensorRT {trt.__version__}", machine=f"GPU {gpu}, {platform.platform()}") + [
        f"Model: {args.onnx or args.model or 'bundled default'} ({info.input_size} px input); inputs: {note}\n",
        "| check | value |",
        "|---|---:|",
        f"| crops compared | {len(crops)} |",
        f"| largest coordinate difference, crop px | {max_px:.4f} |",
        f"| mean point distance, crop px | {float(dist.mean()):.4f} |",
        f"| mean point distance, % {norm} (limit {args.max_nme_change}) | {change:.4f} |",
        f"| ms per batch of 1 (median of {args.repeats}) | {ms1:.3f} |",
        f"| ms per batch of {args.batch} | {msb:.3f} |",
        f"| ms per face at batch {args.batch} | {msb / args.batch:.4f} |",
        f"| verdict | {'OK' if ok else 'DIFFERS from ONNX Runtime fp32'} |",
    ]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        log(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
