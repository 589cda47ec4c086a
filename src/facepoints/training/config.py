"""The training configuration: plain YAML, typed and validated by pydantic.

    name: baseline
    data:
      train: ["300w:../shared/data/300w/afw", {spec: "ytf:...csv", repeat: 1}]
      val_fraction: 0.1
    model: {backbone: resnet18, input_size: 96}
    loss: {name: l1}
    optim: {epochs: 10, lr: 0.001}

Relative paths in a config file are taken from the file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from facepoints.data.augment import AugmentConfig
from facepoints.data.calibration import DETECTOR_CALIBRATIONS
from facepoints.errors import FacepointsError
from facepoints.models.network import BACKBONES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    spec: str = Field(description="FORMAT:PATH")
    repeat: int = Field(1, ge=0, le=20, description="times each sample appears per epoch (oversampling); 0: "
                                                 "validation only (its held-out part is validated, the rest unused)")
    val_fraction: float | None = Field(None, ge=0, lt=1, description="overrides data.val_fraction")


class BalanceConfig(_Strict):
    """Oversample rare head poses: a training sample whose yaw bucket holds ``n_b`` faces
    appears ``(n_max / n_b) ** power`` times as often (times its source's ``repeat``),
    at most ``max_repeat`` times; fractions are drawn with the run's seed."""

    by: Literal["yaw"] = "yaw"
    bins: list[float] = Field(default_factory=lambda: [-90.0, -60.0, -45.0, -30.0, -15.0, 15.0, 30.0, 45.0, 60.0, 90.0],
                              min_length=2, description="bucket edges in degrees; beyond the ends counts in the end buckets")
    power: float = Field(0.5, ge=0, le=1, description="0: no change, 1: every bucket as full as the fullest")
    max_repeat: int = Field(4, ge=1, le=20, description="most copies of one sample")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v):
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("data.balance.bins must be strictly increasing")
        return v


class DataConfig(_Strict):
    train: list[Source]
    val: list[str] = Field(default_factory=list, description="extra validation-only datasets")
    pose_val: list[str] = Field(default_factory=list, description="large-pose validation datasets with a yaw per "
                                "face (a 300-W folder with yaw.csv), reported by the AFLW2000-3D protocol "
                                "(NME by the landmark box per |yaw| bucket 0-30, 30-60, 60-90 degrees and "
                                "their balanced mean) apart from val_nme_io, which they do not enter")
    trust_calibration: list[str] = Field(default_factory=list, description="held-out datasets whose faces join "
                                         "the validation split where a trust model's 90 % error radius is fitted "
                                         "(e.g. turned copies of the validation faces: profile-faces --split val); "
                                         "never trained on, reported apart as trust_*[NAME]")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held out by group (person, photo)")
    subset: int | None = Field(None, ge=1, description="use at most this many training samples")
    val_subset: int | None = Field(None, ge=1, description="validate on at most this many held-out samples "
                                   "(drawn with the seed; the same ones every epoch)")
    scheme: str | None = None
    skip_missing: bool = False
    skip_bad_images: bool = Field(False, description="leave out (and count) images that cannot be decoded")
    exclude: str | None = Field(None, description="file of image ids to leave out (one per line, or clean's JSON)")
    cache_dir: str | None = ".cache/facepoints"
    corrections: bool = Field(True, description="apply review corrections (PATH.corrections.json) where present")
    balance: BalanceConfig | None = Field(None, description="oversample rare yaws (68/98-point schemes)")

    @field_validator("train", mode="before")
    @classmethod
    def _strings_are_specs(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("data.train needs at least one FORMAT:PATH source")
        return [{"spec": s} if isinstance(s, str) else s for s in v]


class ModelConfig(_Strict):
    backbone: str = Field("resnet18", description="a torchvision classifier's trunk: " + ", ".join(BACKBONES))
    pretrained: bool = False
    head: Literal["regression", "heatmap", "pip"] = "regression"
    coordconv: bool = Field(False, description="CoordConv layer at the start of the head")
    heatmap_beta: float = Field(1.0, gt=0, description="soft-argmax sharpness of the heatmap head")
    heatmap_decode: Literal["auto", "soft", "local"] = Field(
        "auto", description="heatmap decoding: soft-argmax, or local (peak window; for heatmap losses); "
                            "auto: local with loss awing, else soft")
    pip_neighbours: int = Field(10, ge=1, le=64, description="PIP head: neighbours per landmark (mean shape)")
    pip_stride: Literal[32, 16] = Field(32, description="PIP head: grid stride (16 on a stride-32 trunk: one "
                                        "deconvolution first; on a stride-16 trunk it must be 16)")
    pip_score_weight: float = Field(10.0, gt=0, description="PIP head: weight of the score-map MSE in its loss")
    pip_trust: bool = Field(False, description="PIP head: also learn, per landmark, an error scale (for a "
                            "calibrated error radius) and a visibility probability, on the grid's features with "
                            "their gradient stopped (the landmarks are trained as without it)")
    pip_trust_kernel: Literal[1, 3] = Field(1, description="PIP head: kernel of the trust branch's first "
                                            "convolution; 3 lets each grid cell see its neighbours (spatial context "
                                            "for visibility). A start (init_from) whose branch has another kernel: "
                                            "the branch starts fresh")
    pip_trust_points: bool = Field(False, description="PIP head: visibility also from the trunk's stride-8 and "
                                   "stride-16 features sampled at each predicted point (a point's own "
                                   "neighbourhood, finer than the grid's cell); starts adding nothing")
    last_conv: bool = Field(True, description="MobileNets: keep the trunk's final 1x1 expansion convolution "
                            "(MobileNetV2 320 -> 1280); false puts the head on the 320 channels before it (faster)")
    trunk_stride: Literal[32, 16] = Field(32, description="16: end the trunk after its last stride-16 block "
                                          "(MobileNetV2: 96 channels; no stride-32 blocks, so no final convolution "
                                          "either): the head's grid twice as fine for less compute")
    init_from: str | None = Field(None, description="start from this model file's weights (fine-tuning); "
                                  "same backbone; with another head, its trunk only")
    input_size: int = Field(128, ge=32, le=512)
    crop_scale: float = Field(1.25, ge=1.0, le=2.5, description="crop side / longest side of the landmark box")
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v):
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {v!r}; choose from {', '.join(BACKBONES)}")
        return v

    @model_validator(mode="after")
    def _grid_on_the_trunk(self):
        if self.head == "pip" and self.pip_stride > self.trunk_stride:
            raise ValueError(f"model.pip_stride {self.pip_stride} is coarser than model.trunk_stride "
                             f"{self.trunk_stride}: set model.pip_stride: {self.trunk_stride}")
        return self


class LossConfig(_Strict):
    name: Literal["l1", "l2", "smooth_l1", "wing", "awing"] = "l1"
    w: float = 10.0
    eps: float = 2.0


class OptimConfig(_Strict):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(30, ge=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)
    trust_only: bool = Field(False, description="train only the PIP head's trust branch (model.pip_trust: error "
                             "scale and visibility), every other weight and BatchNorm statistic frozen: the "
                             "landmarks stay init_from's exactly (minutes per epoch: no gradient reaches the trunk)")
    ema: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the weights "
                              "with this decay (e.g. 0.999); it is what gets validated and saved")


class InferenceConfig(_Strict):
    """Inference defaults stored in the model file (a user can still override them)."""

    flip: bool = Field(False, description="average each prediction with that of the mirrored crop")
    detect_size: int | None = Field(None, ge=32, le=4096, description="the face detector's input size (longer "
                                    "side) this model is run with by default; None: the detector's own (YuNet 960, "
                                    "BlazeFace 128)")
    refine: int | None = Field(None, ge=0, le=3, description="refinement passes after the detector box by "
                               "default (crop again around the landmarks); None: 1")
    detector: str | None = Field(None, description="the face detector this model runs with by default (yunet, "
                                 "blazeface, dlib-hog, haar); None: yunet")

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, v):
        if v is not None and v.strip().lower() not in DETECTOR_CALIBRATIONS:
            raise ValueError(f"unknown face detector {v!r}; choose one of: {', '.join(DETECTOR_CALIBRATIONS)}")
        return None if v is None else v.strip().lower()


class DistillConfig(_Strict):
    """Knowledge distillation: a trained model file (the teacher) labels every augmented
    training crop on the fly, and the loss pulls the student towards those landmarks as
    well as towards the annotations."""

    teacher: str = Field(description="teacher model file (.safetensors); same scheme and crop_scale as the student")
    weight: float = Field(0.5, ge=0, le=1, description="share of the loss on the teacher's landmarks "
                          "(the rest on the annotations); 1: the annotations are ignored")


class TrainConfig(_Strict):
    """The whole recipe; see configs/*.yaml for examples."""

    name: str = Field("run", description="the run's name (logs)")
    seed: int = Field(0, description="seeds the split, shuffling, augmentation and initialisation")
    output: str = Field("runs/run", description="folder for checkpoints, model files and metrics.jsonl")
    data: DataConfig = Field(description="what to train and validate on (section below)")
    model: ModelConfig = Field(ModelConfig(), description="the network (section below)")
    loss: LossConfig = Field(LossConfig(), description="the coordinate loss (section below)")
    optim: OptimConfig = Field(OptimConfig(), description="optimiser and schedule (section below)")
    augment: AugmentConfig = Field(AugmentConfig(), description="training augmentation (section below)")
    inference: InferenceConfig = Field(InferenceConfig(), description="defaults stored in the model file (section below)")
    distill: DistillConfig | None = Field(None, description="knowledge distillation from a teacher model (section below)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cuda when available under auto")
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on the CPU)")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (smoke tests)")
    checkpoint_minutes: float | None = Field(10.0, ge=0, description="also write last.pt inside an epoch every this "
                                             "many minutes (atomic; --resume goes on from that batch with the same "
                                             "random state, bit-identical); 0: after every step; None: epoch ends only")
    note: str = Field("", description="training-data note stored in the model file")

    @model_validator(mode="after")
    def _loss_fits_head(self):
        if self.loss.name == "awing" and self.model.head != "heatmap":
            raise ValueError("loss awing (Adaptive Wing) works on heatmaps: set model.head: heatmap")
        if self.model.head == "pip" and self.loss.name not in ("l1", "l2", "smooth_l1"):
            raise ValueError(f"loss {self.loss.name} does not fit the PIP head, whose offsets are in grid cells: "
                             "use l1 (the paper's), l2 or smooth_l1")
        if self.distill is not None and self.loss.name == "awing":
            raise ValueError("distill: the teacher gives landmarks, not heatmaps; use a coordinate loss (not awing)")
        if self.optim.trust_only and not (self.model.head == "pip" and self.model.pip_trust and self.model.init_from):
            raise ValueError("optim.trust_only trains a trust branch on a trained model: it needs model.head: pip, "
                             "model.pip_trust: true and model.init_from")
        for key in ("pip_trust_kernel", "pip_trust_points"):
            if getattr(self.model, key) != ModelConfig.model_fields[key].default and not (
                    self.model.head == "pip" and self.model.pip_trust):
                raise ValueError(f"model.{key} shapes the trust outputs: it needs model.head: pip and "
                                 "model.pip_trust: true")
        return self


class ConfigError(FacepointsError, ValueError):
    pass


def _set_key(raw: dict, key: str, value, path: Path) -> None:
    """Set a dotted key (``optim.lr``); a number indexes a list (``data.train.5.repeat``;
    a source given as a bare ``FORMAT:PATH`` string becomes ``{spec: ...}`` first), and
    the index one past its end appends (``data.train.6={spec: ...}`` on six sources)."""
    node = raw
    *parents, leaf = key.split(".")
    for depth, p in enumerate(parents + [leaf]):
        if isinstance(node, list):
            if depth == len(parents) and p.isdigit() and int(p) == len(node):
                node.append(value)
                return
            if not (p.isdigit() and int(p) < len(node)):
                raise ConfigError(f"{path}: --set {key}: {p!r} is not an index of a list of {len(node)}")
            if depth == len(parents):
                node[int(p)] = value
                return
            if isinstance(node[int(p)], str):
                node[int(p)] = {"spec": node[int(p)]}
            node = node[int(p)]
        elif depth == len(parents):
            node[p] = value
        else:
            node = node.setdefault(p, {})


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read and validate a config. Every path written in the file (the sources'
    ``FORMAT:PATH``, ``data.val``, ``data.exclude``, ``data.cache_dir``, ``model.init_from``,
    ``distill.teacher``, ``output``) is relative to the file's folder; paths given in
    ``overrides`` (``--set``, ``--output`` on the command line) are relative to the
    working directory. Both become absolute, so the config says where things are
    whatever the directory a run is resumed from."""
    path = Path(path)
    raw = _read_with_base(path, [])
    overrides = overrides or {}
    for key, value in overrides.items():
        _set_key(raw, key, value, path)
    data_overrides = [f"{k}={v}" for k, v in overrides.items() if k.split(".")[0] == "data"]
    if raw.get("note") and data_overrides and "note" not in overrides:
        # the file's note describes the file's data; say what the command line changed
        raw["note"] = f"{raw['note']} (overridden: {', '.join(data_overrides)})"
    resolve_paths(raw, Path.cwd())  # what is still relative came from the overrides
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        hints = _unknown_key_hints(e)
        raise ConfigError(f"{path}: invalid config:\n" + ("\n".join(hints) + "\n" if hints else "") + str(e)) from None


def _section_model(loc: tuple) -> type[BaseModel] | None:
    """The config class at a location of the raw config (``("data", "train", 0)`` -> Source)."""
    model: type[BaseModel] | None = TrainConfig
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return None
        import typing

        ann = f.annotation
        cands = [ann] + list(typing.get_args(ann))
        cands += [a for c in cands for a in typing.get_args(c)]
        model = next((c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _unknown_key_hints(e: ValidationError) -> list[str]:
    """``data.modle: unknown key; did you mean `data.model`?`` for each key the config
    classes do not have, with the nearest valid key of that section."""
    import difflib

    out = []
    for err in e.errors():
        if err.get("type") != "extra_forbidden":
            continue
        *where, key = err["loc"]
        model = _section_model(tuple(where))
        prefix = ".".join(str(p) for p in where)
        full = f"{prefix}.{key}" if prefix else str(key)
        valid = list(model.model_fields) if model is not None else []
        near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
        if not near and model is not None:  # a key put in the wrong section: optim.lr written as model.lr
            for section, f in TrainConfig.model_fields.items():
                sub = _section_model((section,))
                if sub is not None and str(key) in sub.model_fields:
                    near = [f"{section}.{key}"]
                    prefix = ""
                    break
        guess = f"{prefix}.{near[0]}" if near and prefix else (near[0] if near else None)
        out.append(f"{full}: unknown key" + (f"; did you mean `{guess}`?" if guess else
                                             f" (valid here: {', '.join(valid)})"))
    return out


def _read_with_base(path: Path, seen: list) -> dict:
    """A config file as a dict with its paths made absolute, on top of its ``base:``
    (another config file, relative to this one; its own base first; dicts merge key by
    key, anything else, lists included, is replaced), then its ``set:`` (dotted keys, as
    ``--set`` takes them: ``{data.train.5.repeat: 8}``)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base: configs include each other ({' -> '.join(str(p) for p in seen)})")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    base, sets = raw.pop("base", None), raw.pop("set", None) or {}
    resolve_paths(raw, path.parent.resolve())
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: must be the path of another config file")
        raw = _merge(_read_with_base(path.parent / base, seen + [path.resolve()]), raw)
    if not isinstance(sets, dict):
        raise ConfigError(f"{path}: set: must map dotted keys to values (data.train.5.repeat: 8)")
    for key, value in sets.items():
        _set_key(raw, str(key), _set_value_paths(str(key), value, path.parent.resolve()), path)
    return raw


# The path-valued keys, for resolve_paths (a config's own keys) and _set_value_paths (its set:)
SPEC_LIST_KEYS = ("val", "pose_val", "trust_calibration")   # data.*: lists of FORMAT:PATH
DATA_PATH_KEYS = ("exclude", "cache_dir")                   # data.*: a path
MODEL_FILE_KEYS = (("model", "init_from"), ("distill", "teacher"))  # a model file, or a bundled model's name


def _set_value_paths(key: str, value, base: Path):
    """A ``set:`` value with its paths made absolute against the config's folder, as the
    same value written in place would be: a model file, an output folder, a source
    (``data.train.6: {spec: ...}``) or a source's spec, a validation list."""
    parts = key.split(".")
    leaf = parts[-1]
    if isinstance(value, str) and leaf in {k for _, k in MODEL_FILE_KEYS}:
        return _model_path(value, base)
    if isinstance(value, str) and leaf in ("output", *DATA_PATH_KEYS):
        return _absolute(value, base)
    if parts[0] == "data" and len(parts) >= 2:
        if parts[1] == "train" and len(parts) == 3:  # a whole source
            return {**value, "spec": _spec(value.get("spec"), base)} if isinstance(value, dict) else _spec(value, base)
        if parts[1] == "train" and leaf == "spec":
            return _spec(value, base)
        if parts[1] in SPEC_LIST_KEYS:
            return [_spec(v, base) for v in value] if isinstance(value, list) else _spec(value, base)
    return value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _model_path(value, base: Path):
    """A model-file value made absolute, except a bundled model's name ("default", "fast",
    as --model takes it) when no file of that name is beside the config."""
    from facepoints.models.info import BUNDLED_MODELS

    if isinstance(value, str) and value in BUNDLED_MODELS and not (base / value).exists():
        return value
    return _absolute(value, base)


def _absolute(p, base: Path):
    if not isinstance(p, str) or not p:
        return p
    return p if Path(p).is_absolute() else str((base / p).resolve())


def _spec(spec, base: Path):
    """``FORMAT:PATH`` with PATH made absolute; other strings (not a dataset format) as they are."""
    from facepoints.data.formats import FORMATS

    if not isinstance(spec, str):
        return spec
    fmt, sep, p = spec.partition(":")
    return f"{fmt}:{_absolute(p, base)}" if sep and fmt.lower() in FORMATS else spec


def resolve_paths(raw: dict, base: Path) -> dict:
    """Make the path-valued keys of a raw config (a dict, before validation) absolute
    against ``base``, in place; already absolute paths are left alone."""
    if "output" in raw:
        raw["output"] = _absolute(raw["output"], base)
    data = raw.get("data")
    if isinstance(data, dict):
        train = data.get("train")
        if isinstance(train, list):
            data["train"] = [{**t, "spec": _spec(t.get("spec"), base)} if isinstance(t, dict) else _spec(t, base)
                             for t in train]
        for key in SPEC_LIST_KEYS:
            if isinstance(data.get(key), list):
                data[key] = [_spec(v, base) for v in data[key]]
        for key in DATA_PATH_KEYS:
            if key in data:
                data[key] = _absolute(data[key], base)
    for section, key in MODEL_FILE_KEYS:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section][key] = _model_path(raw[section][key], base)
    return raw


def config_reference() -> str:
    """Every config key as Markdown tables (section, key, type, default, description), made
    from the config classes' fields: ``docs/config-reference.md`` is this text (a test
    checks), so the reference cannot drift from what the loader accepts."""
    import typing

    def type_name(ann) -> str:
        text = str(ann).replace("typing.", "").replace("facepoints.training.config.", "")
        text = text.replace("facepoints.data.augment.", "").replace("<class '", "").replace("'>", "")
        return text.replace("NoneType", "None").replace("|", "\\|")

    def rows(model: type[BaseModel], prefix: str, out: list[str], nested: list):
        for name, f in model.model_fields.items():
            ann = f.annotation
            args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
            inner = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (args[0] if args else None)
            if inner is not None and name != "train":
                nested.append((f"{prefix}{name}", inner))
            default = ("required" if f.is_required() else "section below" if inner is not None and name != "train"
                       else repr(f.get_default(call_default_factory=True)))
            desc = (f.description or "").replace("\n", " ").replace("|", "\\|")
            shown = default if default in ("required", "section below") else f"`{default}`"
            out.append(f"| `{prefix}{name}` | {type_name(ann)} | {shown} | {desc} |")

    lines = ["# Training config reference", "",
             "Generated from `facepoints.training.config` (`config_reference()`); a test keeps this file equal to it.",
             "Unknown keys are refused, with the nearest valid key suggested. Paths are relative to the config file.", ""]
    todo = [("", TrainConfig)]
    while todo:
        prefix, model = todo.pop(0)
        title = prefix or "top level"
        lines += [f"## {title}", "", (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "), "",
                  "| key | type | default | description |", "|---|---|---|---|"]
        nested: list = []
        rows(model, f"{prefix}." if prefix else "", lines, nested)
        if model is DataConfig:
            nested.insert(0, ("data.train[]", Source))
        lines.append("")
        todo += nested
    return "\n".join(lines).rstrip() + "\n"


OWN_DATA_TEMPLATE = """\
# A config for your own data (facepoints train --print-config writes this; every key:
# docs/config-reference.md). Paths are relative to this file.
name: mine
output: runs/mine
data:
  train:                      # FORMAT:PATH sources (300w:, csv:, json:, wflw:, cuhk5:, ...), any number of points
{sources}
  val_fraction: 0.1           # held out by group (a photo, a person) for validation
model:
  backbone: mobilenet_v2
  head: pip                   # Pixel-in-Pixel: the bundled models' head
  init_from: default          # the bundled default's trunk (its head is replaced when the points differ)
  input_size: 128
  crop_scale: 1.25
loss: {{name: l1}}
optim:
  lr: 0.0005
  batch_size: 32
  epochs: {epochs}
  warmup_epochs: 0.5
augment:
  occlusion: 0.0              # synthetic occluders on this share of the crops
"""


def own_data_config(sources: list[str], epochs: int = 30, output: str | None = None) -> str:
    """The YAML of :data:`OWN_DATA_TEMPLATE` for ``sources`` (what ``facepoints train
    --data SPEC`` trains with and ``--print-config`` prints)."""
    text = OWN_DATA_TEMPLATE.format(sources="\n".join(f"    - \"{s}\"" for s in sources) or "    - \"300w:my-faces/\"",
                                    epochs=int(epochs))
    return text if output is None else text.replace("output: runs/mine", f"output: {output}")
