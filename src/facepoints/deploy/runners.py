"""Backends for ``.safetensors`` model files: PyTorch itself, or ONNX Runtime on a
cached export. (The bundled models and ``.onnx`` files need neither: they run on
:mod:`facepoints.inference.runtime` without PyTorch.)

A ``.safetensors`` model on the CPU runs on ONNX Runtime by default (``runtime="auto"``):
it is exported once, checked against the PyTorch model, and cached by content hash
under ``$FACEPOINTS_CACHE`` (default ``~/.cache/facepoints``) ``/onnx/``;
``runtime="torch"`` keeps it in PyTorch. (TorchScript exports are for other programs;
facepoints does not load them, since a TorchScript file carries code.)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from facepoints.deploy.onnx_file import write_onnx
from facepoints.inference.runtime import OnnxRunner, is_onnx, onnx_file
from facepoints.models.info import ModelFileError, ModelInfo, bundled_name, model_file
from facepoints.models.package import load_model

RUNTIMES = ("auto", "onnx", "torch")


class TorchRunner:
    """A PyTorch ``nn.Module`` (or traced module) as a backend."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model = model.to(device).eval() if isinstance(model, torch.nn.Module) else model
        self.device = device

    @property
    def has_trust(self) -> bool:
        return bool(getattr(self.model, "has_trust", False))

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.model(x).float().cpu().numpy()

    @torch.no_grad()
    def run_trust(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(landmarks, trust or None) in one pass (see OnnxRunner.run_trust)."""
        if not self.has_trust:
            return self(batch), None
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        landmarks, trust = self.model.with_trust(x)
        return landmarks.float().cpu().numpy(), trust.float().cpu().numpy()


def cache_dir() -> Path:
    return Path(os.environ.get("FACEPOINTS_CACHE") or Path.home() / ".cache" / "facepoints")


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise ModelFileError(f"{path}: {e.strerror or e}") from None


def cached_onnx(path: str | Path | None = None) -> Path:
    """The ONNX export of a ``.safetensors`` model file (the bundled one if None), made
    on first use and kept under ``cache_dir()/onnx/`` by the file's SHA-256: a changed
    model file gets a new export. The export is checked against the PyTorch model on
    random crops (largest landmark difference at most 0.01 of the crop) before it is
    kept, and written atomically."""
    src = model_file(path)
    if not src.is_file():
        raise ModelFileError(f"{src}: no such model file")
    digest = file_sha256(src)
    out = cache_dir() / "onnx" / f"{digest[:24]}.onnx"
    if out.is_file():
        return out
    model, info = load_model(src)
    info.exported_from = {"file": src.name, "sha256": digest}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write_onnx(model, info, tmp)
        x = np.random.default_rng(0).random((2, 3, info.input_size, info.input_size), dtype=np.float32)
        ours, theirs = OnnxRunner(tmp).run_trust(x), TorchRunner(model).run_trust(x)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs) if a is not None)
        if not diff <= 0.01:
            raise ModelFileError(f"{src}: the ONNX export differs from the PyTorch model by {diff:.3g} of the crop")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load_runner(path: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                runtime: str = "auto", **onnx_kw) -> tuple[object, ModelInfo]:
    """``(run, info)`` for a model argument (the bundled model if None). ``.onnx`` files
    and bundled models (their packaged ONNX files) run on ONNX Runtime; a
    ``.safetensors`` model runs on ONNX Runtime too with ``runtime`` "onnx", or "auto"
    on the CPU (through :func:`cached_onnx`; if the export cannot be made or cached,
    "auto" warns and stays in PyTorch), and in PyTorch with "torch" or on a GPU."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    onnx_ok = runtime == "onnx" or (runtime == "auto" and device == "cpu")
    if onnx_ok and (is_onnx(path) or bundled_name(path)):
        path = onnx_file(path)
    elif onnx_ok:
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
    return TorchRunner(model, device, threads=threads), info
