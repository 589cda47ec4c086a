"""Model files: weights plus everything needed to use them, in one safetensors file
(the metadata: :mod:`facepoints.models.info`). Loading never unpickles anything, so a
model file from a stranger cannot run code; checkpoints are read ``weights_only``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facepoints.models.info import (BUNDLED, BUNDLED_MODELS, BUNDLED_ONNX, FORMAT_VERSION,  # noqa: F401 (re-exported)
                                    Architecture, ModelFileError, ModelInfo, model_file, read_info)
from facepoints.models.network import LandmarkNet, ModelBuildError, build_model


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def save_model(model: LandmarkNet, info: ModelInfo, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, then rename. The metadata gets
    the tensors' content hash (checked by :func:`load_model`)."""
    from facepoints.version import __version__

    info.version = info.version or __version__
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info.tensors_sha256 = tensors_sha256(state)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _write_atomically(lambda: save_file(state, str(tmp), metadata={"facepoints": info.to_json()}), tmp, path)


def _write_atomically(write, tmp: Path, path: Path) -> None:
    """Run ``write`` (which writes ``tmp``), give the file the usual mode (0666 less the
    umask; safetensors and torch would leave 0600), and rename it onto ``path``. A failed
    write (a full disk) removes the temp file and raises one ModelFileError line."""
    try:
        write()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise ModelFileError(f"{path}: could not be written ({reason}); nothing was replaced") from None


def load_model(path: str | Path | None = None) -> tuple[LandmarkNet, ModelInfo]:
    """The network in eval mode and its metadata; the bundled model if ``path`` is None."""
    path = model_file(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    info = read_info(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: damaged weights ({e})") from None

    arch = info.architecture()

    def build() -> LandmarkNet:
        return build_model(arch.backbone, arch.num_points, arch.head, pretrained=False, **arch.kwargs)

    # The metadata says what to build; check it against the tensors on the meta device
    # first (no memory), so a tampered file cannot make us allocate a huge network.
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except (ModelBuildError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"{path}: metadata describes no buildable network ({str(e)[:200]})") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        diff = [f"{k}: file {got[k]}, network {want[k]}" for k in want if k in got and got[k] != want[k]]
        diff += [f"missing {k}" for k in want if k not in got] + [f"unexpected {k}" for k in got if k not in want]
        raise ModelFileError(f"{path}: weights do not fit a {info.backbone}/{info.head} network with "
                             f"{info.landmark_scheme.num_points} points ({len(diff)} tensor(s); {'; '.join(diff[:3])})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelFileError(f"{path}: damaged weights (NaN or infinite values in {', '.join(bad[:3])})")
    if info.tensors_sha256 and tensors_sha256(state) != info.tensors_sha256:
        raise ModelFileError(f"{path}: the weights were changed after the file was written (their content hash "
                             "does not match the one saved with them); refusing a tampered or damaged model file")
    model = build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit a {info.backbone}/{info.head} network ({str(e)[:300]})") from None
    return model.eval(), info


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, read without unpickling code (``weights_only=True``)."""
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message goes on to suggest weights_only=False: that would run the file's code
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):  # it names a function or class to call
            raise ModelFileError(f"{path}: not loaded: the file holds code (pickled objects other than tensors and "
                                 "plain values), which a facepoints checkpoint never does; do not load it with "
                                 "pickle or torch.load(weights_only=False) unless you trust whoever made it") from None
        raise ModelFileError(f"{path}: not a readable facepoints checkpoint (damaged or not a checkpoint)") from None
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable facepoints checkpoint ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Atomic: a run killed while writing leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _write_atomically(lambda: torch.save(obj, str(tmp)), tmp, path)
