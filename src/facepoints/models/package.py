"""Model files: weights plus everything needed to use them, in one safetensors file.

A ``.safetensors`` file holds tensors and a string-to-string header; ours keeps the
metadata as JSON under the key ``facepoints``: the landmark scheme, input size, crop
scale, normalisation, architecture, metrics and a training-data note. Loading never
unpickles anything, so a model file from a stranger cannot run code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facepoints.models.network import IMAGENET_MEAN, IMAGENET_STD, LandmarkNet, ModelBuildError, build_model
from facepoints.schemes import LandmarkScheme

FORMAT_VERSION = 1
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
# Models shipped in the package, by the name --model / load(model=...) accepts.
BUNDLED_MODELS = {"default": WEIGHTS / "default.safetensors", "fast": WEIGHTS / "fast.safetensors"}
BUNDLED = BUNDLED_MODELS["default"]


def model_file(model: str | Path | None) -> Path:
    """The file a model argument names: the bundled default for None, a bundled model for
    its name ("default", "fast") unless a file of that name exists, else the path itself."""
    if model is None:
        return BUNDLED
    if str(model) in BUNDLED_MODELS and not Path(model).exists():
        return BUNDLED_MODELS[str(model)]
    return Path(model)


class ModelFileError(ValueError):
    """A model file that is not a facepoints model, or is damaged."""


@dataclass
class ModelInfo:
    scheme: dict
    backbone: str
    head: str
    input_size: int
    crop_scale: float
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    input_range: str = "RGB float in [0, 1], normalised inside the network"
    output: str = "landmarks (P, 2) in crop units, 0..1 between the centres of the corner pixels"
    version: str = ""
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # "fp32", or "int8" for a statically quantised ONNX export; ``quantization`` then
    # says how (scheme, calibration faces, parity numbers against the fp32 model)
    precision: str = "fp32"
    quantization: dict = field(default_factory=dict)

    @property
    def landmark_scheme(self) -> LandmarkScheme:
        return LandmarkScheme.from_dict(self.scheme)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        d = json.loads(text)
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(f"model format {d['format_version']} is newer than this facepoints ({FORMAT_VERSION})")
        return cls(**known)


def save_model(model: LandmarkNet, info: ModelInfo, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, then rename."""
    from facepoints import __version__

    info.version = info.version or __version__
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"facepoints": info.to_json()})
    os.replace(tmp, path)


def read_info(path: str | Path | None) -> ModelInfo:
    """A model file's metadata (the bundled model's for None, a bundled model by name)."""
    from safetensors import safe_open

    path = model_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a facepoints model file ({e})") from None
    if "facepoints" not in meta:
        raise ModelFileError(f"{path}: a safetensors file without facepoints metadata (a foreign model?)")
    try:
        info = ModelInfo.from_json(meta["facepoints"])
        num_points = info.landmark_scheme.num_points
    except ModelFileError as e:
        raise ModelFileError(f"{path}: {e}") from None
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ModelFileError(f"{path}: damaged facepoints metadata ({e.__class__.__name__}: {str(e)[:200]})") from None
    # A crop of input_size^2 pixels is allocated per face: refuse absurd values up front.
    size, scale = info.input_size, info.crop_scale
    if not (isinstance(size, int) and 16 <= size <= 1024 and isinstance(scale, (int, float))
            and math.isfinite(scale) and 0.5 <= scale <= 4 and isinstance(info.recipe, dict)):
        raise ModelFileError(f"{path}: damaged facepoints metadata (input_size {size!r}, crop_scale {scale!r}, "
                             f"{num_points} points)")
    return info


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

    def build() -> LandmarkNet:
        return build_model(info.backbone, info.landmark_scheme.num_points, info.head, pretrained=False,
                           **info.recipe.get("model_kwargs", {}))

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
    model = build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit a {info.backbone}/{info.head} network ({str(e)[:300]})") from None
    return model.eval(), info


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, read without unpickling code (``weights_only=True``)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{path}: not a readable facepoints checkpoint ({e.__class__.__name__}: {str(e)[:200]})") from None


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Atomic: a run killed while writing leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, str(tmp))
    os.replace(tmp, path)
