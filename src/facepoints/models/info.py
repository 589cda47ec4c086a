"""Model files' metadata, read without PyTorch: what a model is and how to crop for it.

A facepoints ``.safetensors`` file holds tensors and a string-to-string header; ours
keeps the metadata as JSON under the key ``facepoints``: the landmark scheme, input
size, crop scale, normalisation, architecture, metrics and a training-data note. The
bundled models also ship as ONNX files (``weights/NAME.onnx``, same metadata), which is
what inference runs; :mod:`facepoints.models.package` reads and writes the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import SafetensorError

from facepoints.errors import FacepointsError
from facepoints.schemes import LandmarkScheme

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMAT_VERSION = 1
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
# Models shipped in the package, by the name --model / load(model=...) accepts.
BUNDLED_MODELS = {"default": WEIGHTS / "default.safetensors", "fast": WEIGHTS / "fast.safetensors"}
BUNDLED = BUNDLED_MODELS["default"]
# Their ONNX exports, shipped beside them: `python -m facepoints.deploy.bundle` rebuilds
# them from the .safetensors files (a test fails when they are out of date).
BUNDLED_ONNX = {name: path.with_suffix(".onnx") for name, path in BUNDLED_MODELS.items()}


def bundled_name(model: str | Path | None) -> str | None:
    """"default" or "fast" when ``model`` names a bundled model (None: the default),
    unless a file of that name exists in the working directory; else None."""
    if model is None:
        return "default"
    if str(model) in BUNDLED_MODELS and not Path(model).exists():
        return str(model)
    return None


def model_file(model: str | Path | None) -> Path:
    """The file a model argument names: the bundled default for None, a bundled model for
    its name ("default", "fast") unless a file of that name exists, else the path itself."""
    name = bundled_name(model)
    return BUNDLED_MODELS[name] if name else Path(model)


def model_card(model: str | Path | None) -> str | None:
    """The card of a bundled model (``weights/NAME.md``, beside its weights), or of a model
    file with a ``.md`` of the same name beside it; None when there is none."""
    name = bundled_name(model)
    path = (WEIGHTS / f"{name}.md") if name else Path(model).with_suffix(".md")
    return path.read_text() if path.is_file() else None


class ModelFileError(FacepointsError, ValueError):
    """A model file that is not a facepoints model, or is damaged."""

    http_status = 500


@dataclass(frozen=True)
class Architecture:
    """What network a model file holds: the arguments of
    :func:`facepoints.models.network.build_model` (training builds from it, loading
    rebuilds from it, checkpoints carry it)."""

    backbone: str
    head: str
    num_points: int
    kwargs: dict = field(default_factory=dict)  # dropout, input_size, head options, ...

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        return cls(str(d["backbone"]), str(d["head"]), int(d["num_points"]), dict(d.get("kwargs") or {}))


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
    # an ONNX export: the model file it was made from ({"file": name, "sha256": ...})
    exported_from: dict = field(default_factory=dict)
    # the network (Architecture as a dict); files written before it have backbone, head
    # and recipe["model_kwargs"], which architecture() reads instead
    network: dict = field(default_factory=dict)
    # detector name -> BoxCalibration fields ({"dx", "dy", "sw", "sh"}): how a detector's
    # face box became this model's crop when it was made, so a later re-calibration of a
    # detector does not change an existing model's crops
    box_calibrations: dict = field(default_factory=dict)
    # SHA-256 of the tensors (names, dtypes, shapes, bytes), checked on load
    tensors_sha256: str = ""
    # a model with a trust branch: how its outputs become calibrated numbers, fitted on
    # held-out faces (facepoints.training.trust.fit_trust): {"radius90": [per landmark:
    # error radius / predicted scale that holds 90 % of errors], "quality_scale": the
    # median face's mean radius / crop side, "faces": N, "fitted_on": "..."}
    trust: dict = field(default_factory=dict)

    def architecture(self) -> Architecture:
        if self.network:
            return Architecture.from_dict(self.network)
        return Architecture(self.backbone, self.head, self.landmark_scheme.num_points,
                            dict(self.recipe.get("model_kwargs", {})))

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


def read_info(path: str | Path | None) -> ModelInfo:
    """A model file's metadata (the bundled model's for None, a bundled model by name)."""
    from safetensors import safe_open

    path = model_file(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a facepoints model file ({e})") from None
    if "facepoints" not in meta:
        raise ModelFileError(f"{path}: a safetensors file without facepoints metadata (a foreign model?)")
    return parse_info(meta["facepoints"], path)


def parse_info(text: str, where) -> ModelInfo:
    """Model metadata from its JSON, validated (:func:`check_info`): the one reader for
    every model format (``.safetensors`` header, ONNX metadata)."""
    try:
        info = ModelInfo.from_json(text)
        if not isinstance(json.loads(text), dict):
            raise TypeError("not a JSON object")
    except ModelFileError as e:
        raise ModelFileError(f"{where}: {e}") from None
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ModelFileError(f"{where}: damaged facepoints metadata ({e.__class__.__name__}: {str(e)[:200]})") from None
    check_info(info, where)
    return info


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_info(info: ModelInfo, where) -> None:
    """Refuse metadata that would crash, allocate without bound or silently mislabel:
    the crop (input_size 16-1024 px, crop_scale 0.5-4, finite), the scheme against the
    network's point count, the inference recommendations (flip a bool, refine 0-3,
    detect_size 32-4096, detector a name) and the trust calibration's length."""
    def bad(what: str):
        raise ModelFileError(f"{where}: damaged facepoints metadata ({what})")

    try:
        num_points = info.landmark_scheme.num_points
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        bad(f"scheme: {e.__class__.__name__}: {str(e)[:200]}")
    size, scale = info.input_size, info.crop_scale
    if not _is_int(size, 16, 1024):
        bad(f"input_size {size!r}: must be a whole number of pixels, 16 to 1024")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and 0.5 <= scale <= 4):
        bad(f"crop_scale {scale!r}: must be a finite number, 0.5 to 4")
    if not isinstance(info.recipe, dict) or not isinstance(info.network, dict) or not isinstance(info.trust, dict):
        bad("recipe, network and trust must be JSON objects")
    if info.network and info.network.get("num_points") != num_points:
        bad(f"the scheme {info.landmark_scheme.name!r} has {num_points} points, the network "
            f"{info.network.get('num_points')!r}")
    rec = info.recipe.get("inference", {})
    if not isinstance(rec, dict):
        bad("recipe.inference must be a JSON object")
    checks = {"flip": lambda v: isinstance(v, bool), "refine": lambda v: _is_int(v, 0, 3),
              "detect_size": lambda v: _is_int(v, 32, 4096), "detector": lambda v: isinstance(v, str) and 0 < len(v) < 40}
    for key, ok in checks.items():
        if rec.get(key) is not None and not ok(rec[key]):
            bad(f"recipe.inference.{key} {rec[key]!r}")
    factors = info.trust.get("radius90")
    if factors is not None and not (isinstance(factors, list) and len(factors) == num_points
                                    and all(isinstance(f, (int, float)) and math.isfinite(f) and f > 0 for f in factors)):
        bad(f"trust.radius90 must be {num_points} positive numbers")
    q = info.trust.get("quality_scale")
    if q is not None and not (isinstance(q, (int, float)) and math.isfinite(q) and q > 0):
        bad(f"trust.quality_scale {q!r}")
