"""Inference backends: something that turns a batch of crops into landmarks.

A backend is a callable ``run(batch) -> landmarks``: ``batch`` is a float32 array
``(B, 3, S, S)``, RGB in [0, 1] (the network normalises itself); the result is a
float32 array ``(B, P, 2)`` in crop units. :class:`~facepoints.deploy.predictor.Predictor`
holds one, so the same detector -> crop -> un-crop code runs a PyTorch model or an
exported ONNX file:

    predictor = facepoints.load("model.onnx")     # ONNX Runtime, metadata from the file
    predictor = facepoints.load("model.safetensors")

``.onnx`` files are read with ONNX Runtime; anything else is a facepoints
``.safetensors`` model, which on the CPU also runs on ONNX Runtime by default
(``runtime="auto"``): it is exported once, checked against the PyTorch model, and
cached by content hash under ``$FACEPOINTS_CACHE`` (default ``~/.cache/facepoints``)
``/onnx/``; ``runtime="torch"`` keeps it in PyTorch. (TorchScript exports are for
other programs; facepoints does not load them, since a TorchScript file carries code.)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from facepoints.models.package import ModelFileError, ModelInfo, load_model

ONNX_META_KEY = "facepoints"
ONNX_SUFFIXES = (".onnx",)


class TorchRunner:
    """A PyTorch ``nn.Module`` (or traced module) as a backend."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.model = model.to(device).eval() if isinstance(model, torch.nn.Module) else model
        self.device = device

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.model(x).float().cpu().numpy()


class OnnxRunner:
    """An ONNX file run by ONNX Runtime on the CPU.

    ``threads``: intra-op threads (1 by default: a server runs several requests side
    by side, and one thread each is the most throughput per core).
    ``session_options``: an ``onnxruntime.SessionOptions`` to use instead of ours.
    """

    def __init__(self, path: str | Path, threads: int | None = 1, providers: list | None = None,
                 session_options=None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file")
        opts = session_options
        if opts is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads or 1)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{self.path}: not a readable ONNX model ({e.__class__.__name__}: {str(e)[:300]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def info(self) -> ModelInfo:
        meta = self.metadata
        if ONNX_META_KEY not in meta:
            raise ModelFileError(f"{self.path}: an ONNX file without facepoints metadata (a foreign model?)")
        try:
            return ModelInfo.from_json(meta[ONNX_META_KEY])
        except (json.JSONDecodeError, TypeError) as e:
            raise ModelFileError(f"{self.path}: damaged facepoints metadata ({e})") from None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


def is_onnx(path: str | Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() in ONNX_SUFFIXES


RUNTIMES = ("auto", "onnx", "torch")


def cache_dir() -> Path:
    return Path(os.environ.get("FACEPOINTS_CACHE") or Path.home() / ".cache" / "facepoints")


def cached_onnx(path: str | Path | None = None) -> Path:
    """The ONNX export of a ``.safetensors`` model file (the bundled one if None), made
    on first use and kept under ``cache_dir()/onnx/`` by the file's SHA-256: a changed
    model file gets a new export. The export is checked against the PyTorch model on
    random crops (largest landmark difference at most 0.01 of the crop) before it is
    kept, and written atomically."""
    from facepoints.models.package import model_file

    src = model_file(path)
    if not src.is_file():
        raise ModelFileError(f"{src}: no such model file")
    try:
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:24]
    except OSError as e:
        raise ModelFileError(f"{src}: {e.strerror or e}") from None
    out = cache_dir() / "onnx" / f"{digest}.onnx"
    if out.is_file():
        return out
    from facepoints.deploy.export import write_onnx

    model, info = load_model(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write_onnx(model, info, tmp)
        x = np.random.default_rng(0).random((2, 3, info.input_size, info.input_size), dtype=np.float32)
        diff = np.abs(OnnxRunner(tmp)(x) - TorchRunner(model)(x)).max()
        if not diff <= 0.01:
            raise ModelFileError(f"{src}: the ONNX export differs from the PyTorch model by {diff:.3g} of the crop")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_runner(path: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                runtime: str = "auto", **onnx_kw) -> tuple[object, ModelInfo]:
    """``(run, info)`` for a model file (the bundled model if None). ``.onnx`` files run on
    ONNX Runtime; a ``.safetensors`` model runs on ONNX Runtime too with ``runtime``
    "onnx", or "auto" on the CPU (through :func:`cached_onnx`; if the export cannot be
    made or cached, "auto" warns and stays in PyTorch), and in PyTorch with "torch"
    or on a GPU."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if not is_onnx(path) and (runtime == "onnx" or (runtime == "auto" and device == "cpu")):
        try:
            path = cached_onnx(path)
        except OSError as e:  # e.g. a read-only home: run the same model in PyTorch
            if runtime == "onnx":
                raise
            warnings.warn(f"no ONNX Runtime copy of the model ({e}); running it in PyTorch", stacklevel=2)
    if is_onnx(path):
        if device != "cpu":
            raise ValueError(f"ONNX models run on the CPU here, not {device!r}")
        runner = OnnxRunner(path, threads=threads or 1, **onnx_kw)
        return runner, runner.info()
    model, info = load_model(path)
    return TorchRunner(model, device), info
