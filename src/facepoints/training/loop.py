"""The training loop, in the torchvision-references style: ``load_data`` (splits and
crops), ``build_network`` (the model the config describes), ``train_one_epoch``,
``validate``; ``train`` only wires them, with a checkpoint after every epoch. Options
change behaviour through ``TrainConfig``, nothing else; progress goes to the
``facepoints.training`` logger (the CLI shows it on stderr; stdout stays for ``--json``).

Determinism: shuffling, augmentation and dropout of epoch ``e`` are seeded from
``(seed, e)``, and a checkpoint is written atomically after every epoch, so a run
killed at any moment and resumed with ``resume=True`` ends with the same weights
as one that was never interrupted. A checkpoint carries the run's config and the
network's arguments; ``resume`` refuses a config that differs from the run's in
anything but where it writes and how many threads it uses.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from facepoints.data.augment import apply, build_transform, paste_patch
from facepoints.data.calibration import calibration_record
from facepoints.data.crop_cache import CropCache, build_cache
from facepoints.data.formats import read_dataset
from facepoints.data.images import short_names
from facepoints.data.splits import Splits, read_exclusions, split_sources  # noqa: F401 (re-exported)
from facepoints.errors import FacepointsError, TrainingError
from facepoints.evaluation.metrics import nme, pose_protocol
from facepoints.models.losses import build_loss
from facepoints.models.network import LandmarkNet, RawOutputs, build_model
from facepoints.models.package import (
    Architecture,
    ModelFileError,
    ModelInfo,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from facepoints.training.config import TrainConfig, resolve_paths

log = logging.getLogger("facepoints.training")

# config keys a resumed run may change: where it writes, how it runs, not what it learns
RESUMABLE_KEYS = ("output", "threads", "device", "amp", "channels_last", "max_steps", "note", "name", "data.cache_dir",
                  "checkpoint_minutes", "data.val_subset")


class ResumeError(FacepointsError, ValueError):
    """``--resume`` that cannot continue the run as it was started."""


def make_splits(cfg: TrainConfig) -> Splits:
    """The config's training and validation splits (:func:`facepoints.data.splits.split_sources`).
    A training source made from validation faces (``profile-faces --split val``: its
    provenance.json says so) is refused: training on it would leak the validation split."""
    from facepoints.training.config import ConfigError

    for src in cfg.data.train:
        folder = Path(src.spec.partition(":")[2])
        prov = folder / "provenance.json" if folder.is_dir() else None
        if prov is not None and prov.is_file():
            try:
                split = json.loads(prov.read_text()).get("split", "train")
            except (OSError, ValueError):
                split = "train"
            if split != "train":
                raise ConfigError(f"data.train {src.spec}: made from {split} faces ({prov}); use it in "
                                  "data.trust_calibration or data.val, never to train")
    return split_sources(cfg.data, cfg.seed)


class CropDataset(torch.utils.data.Dataset):
    """Augmented crops: (image, landmarks in crop units, visibility per point)."""

    def __init__(self, cache: CropCache, transform, scheme, input_size: int, visible: np.ndarray | None = None,
                 occluder_photos: float = 0.0):
        self.cache, self.transform, self.scheme, self.size = cache, transform, scheme, input_size
        self.visible = visible if visible is not None else np.ones(cache.points.shape[:2], np.float32)
        self.occluder_photos = occluder_photos

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        img, pts, vis = apply(self.transform, self.cache.images[i], self.cache.points[i], self.scheme, self.visible[i])
        if self.occluder_photos and float(torch.rand(())) < self.occluder_photos:
            # torch's generator (saved in mid-epoch checkpoints) seeds it: a resumed run pastes the same
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, ())))
            donor = self.cache.images[int(rng.integers(len(self.cache)))]
            img, vis = paste_patch(img, pts, vis, donor, rng)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return x, torch.from_numpy(pts / (self.size - 1)), torch.from_numpy(vis)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def predict_crops(model, images: np.ndarray, input_size: int, batch: int = 64) -> np.ndarray:
    """Landmarks in crop pixels for centre crops of cached images."""
    model.eval()
    device = next(model.parameters()).device
    s = images.shape[1]
    o = (s - input_size) // 2
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch, o:o + input_size, o:o + input_size]))
        x = x.permute(0, 3, 1, 2).float().div_(255)
        out.append(model(x.to(device)).float().cpu().numpy() * (input_size - 1) + o)
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:2])


def source_labels(specs: list[str]) -> dict[str, str]:
    """Short names for FORMAT:PATH sources: the format and the path's last part, or as
    many last parts as it takes to tell them apart (helen/trainset, lfpw/trainset)."""
    names = short_names([spec.partition(":")[2] for spec in specs])
    return {spec: f"{spec.partition(':')[0]}:{name}" for spec, name in zip(specs, names)}


YAW_EDGES = (0, 15, 30, 45)  # |yaw| buckets of the validation report: 0-15, 15-30, 30-45, 45+ degrees


def yaw_buckets(samples, scheme) -> list[str]:
    """Each sample's |yaw| bucket by its labelled landmarks ("yaw 15-30", "yaw 45+"),
    "" where no pose can be estimated (a scheme without pose points, a failed fit)."""
    from facepoints.data.pose import PoseError, dataset_poses

    try:
        yaw = np.abs(dataset_poses(samples, scheme).yaw)
    except PoseError:
        return [""] * len(samples)
    names = [f"yaw {a}-{b}" for a, b in zip(YAW_EDGES, YAW_EDGES[1:])] + [f"yaw {YAW_EDGES[-1]}+"]
    return ["" if not np.isfinite(y) else names[int(np.searchsorted(YAW_EDGES, y, side="right")) - 1] for y in yaw]


def validate(model, cache: CropCache, scheme, input_size: int, sources: list[str],
             yaws: list[str] | None = None, pred: np.ndarray | None = None) -> dict:
    """NME (inter-ocular, %) and FR@0.1 on the validation crops: overall, per source
    (``val_nme_io[300w:afw]``) and per |yaw| bucket (``val_nme_io[yaw 15-30]``).
    ``pred``: the model's landmarks on these crops, when already computed."""
    if len(cache) == 0:
        return {}
    if pred is None:
        pred = predict_crops(model, cache.images, input_size)
    err = nme(pred, cache.points, scheme, "io")
    out = {"val_nme_io": float(err.mean() * 100), "val_fr10": float((err > 0.1).mean() * 100)}
    src = np.array(sources)
    for name, label in source_labels(sorted(set(sources))).items():
        out[f"val_nme_io[{label}]"] = float(err[src == name].mean() * 100)
        out[f"val_n[{label}]"] = int((src == name).sum())
    groups = np.array(yaws if yaws is not None else [""] * len(err))
    for name in sorted(set(groups) - {""}, key=lambda g: int(g.split()[1].split("-")[0].rstrip("+"))):
        out[f"val_nme_io[{name}]"] = float(err[groups == name].mean() * 100)
        out[f"val_n[{name}]"] = int((groups == name).sum())
    return out


def data_fingerprint(data: "TrainData") -> dict:
    """What a resumed run must find again: the number of training and validation crops and
    a hash of their ids and landmarks (a checkpoint keeps it; ``--resume`` compares)."""
    import hashlib

    h = hashlib.sha256()
    for cache in (data.train, data.val):
        h.update("\n".join(cache.ids).encode("utf-8", "surrogateescape"))
        h.update(np.ascontiguousarray(cache.points, np.float32).tobytes())
    return {"train": len(data.train), "val": len(data.val), "sha256": h.hexdigest()[:24]}


def trust_passes(model, data: "TrainData", input_size: int) -> list:
    """A trust model's (landmarks, scale, visibility) on the validation crops, then on each
    ``data.pose_val`` set's, then on each ``data.trust_calibration`` set's."""
    from facepoints.training.trust import trust_outputs

    caches = [data.val, *(c for _, c, _ in data.pose), *(c for _, c in data.calibration)]
    return [trust_outputs(model, c.images, input_size) for c in caches]


def validate_trust(model, data: "TrainData", scheme, input_size: int, outputs: list | None = None,
                   coverage: float = 0.9) -> tuple[dict, dict]:
    """For a model with a trust branch: its calibration fitted on the validation crops and
    the ``data.trust_calibration`` sets' (:func:`facepoints.training.trust.fit_trust`; the
    quality scale on the validation crops alone), and how it does on each of them and on each
    ``data.pose_val`` set (``trust_coverage[NAME]``, ``trust_rank_corr[...]``,
    ``trust_fail_auroc[...]``, ``trust_selective_gain[...]``; see ``trust_report``).
    ``outputs``: :func:`trust_passes` of the model, when already computed."""
    from facepoints.training.trust import fit_trust, point_errors_crop, trust_report

    outputs = outputs or trust_passes(model, data, input_size)
    (pred, scale, vis), rest = outputs[0], outputs[1:]
    pose_outputs, calib_outputs = rest[:len(data.pose)], rest[len(data.pose):]
    err = point_errors_crop(pred, data.val.points, input_size)
    sets = [("val", data.val, pred, scale, vis, err)]
    for (name, cache, _), (p, sc, v) in zip(data.pose, pose_outputs):
        sets.append((name, cache, p, sc, v, point_errors_crop(p, cache.points, input_size)))
    calib = []
    for (name, cache), (p, sc, v) in zip(data.calibration, calib_outputs):
        calib.append((name, cache, p, sc, v, point_errors_crop(p, cache.points, input_size)))
    fitted_on = f"{len(err)} validation faces of the training split" + "".join(
        f" + {len(c[5])} of {c[0]}" for c in calib)
    cal = fit_trust(np.concatenate([err, *(c[5] for c in calib)]), np.concatenate([scale, *(c[3] for c in calib)]),
                    fitted_on, quality_on=(err, scale), coverage=coverage)
    sets += calib
    metrics = {}
    for name, cache, p, sc, v, e in sets:
        face_nme = nme(p, cache.points, scheme, "box")
        for key, value in trust_report(e, sc, cal, face_nme).items():
            metrics[f"trust_{key}[{name}]"] = value
    return cal, metrics


@dataclass
class TrainData:
    """Everything ``train`` needs from the data: decoded crops and per-sample facts."""

    scheme: object
    train: CropCache
    val: CropCache
    repeats: list[int]           # per training crop
    val_sources: list[str]       # per validation crop: its FORMAT:PATH source
    val_yaws: list[str]          # per validation crop: its |yaw| bucket ("" unknown)
    train_visible: np.ndarray | None = None   # (M, P) per training crop: 1 seen, 0 hidden (None: all seen)
    pose: list[tuple[str, CropCache, np.ndarray]] = field(default_factory=list)  # data.pose_val: (name, crops, yaws)
    calibration: list[tuple[str, CropCache]] = field(default_factory=list)  # data.trust_calibration: (name, crops)


def load_data(cfg: TrainConfig, splits: Splits | None = None, progress: bool = False, lead: bool = True) -> TrainData:
    """Read the sources, split them, and decode the crops (cached on disk)."""
    splits = splits or make_splits(cfg)
    scheme = splits.train.scheme
    if cfg.augment.enabled and cfg.augment.flip and not scheme.has_flip:
        mean = np.mean([s.landmarks - s.landmarks.mean(0) for s in splits.train.samples], axis=0)
        scheme = scheme.with_flip_from_mean_shape(mean)
    m, t0, skip = cfg.model, time.time(), cfg.data.skip_bad_images
    train_cache = build_cache(splits.train, m.input_size, m.crop_scale, cache_dir=cfg.data.cache_dir,
                              progress=progress, skip_bad_images=skip)
    val_cache = build_cache(splits.val, m.input_size, m.crop_scale, cache_dir=cfg.data.cache_dir,
                            progress=progress, skip_bad_images=skip)
    repeats = [splits.repeats[i] for i in train_cache.positions()]
    val_samples = [splits.val.samples[i] for i in val_cache.positions()]
    if lead:
        for line in train_cache.skipped + val_cache.skipped:
            log.warning("warning: left out: %s", line)
        log.info("data: %d train faces (%d per epoch with repeats), %d val faces, cropped in %.0fs",
                 len(train_cache), sum(repeats), len(val_cache), time.time() - t0)
    train_samples = [splits.train.samples[i] for i in train_cache.positions()]
    visible = None
    if any("visible" in s.attributes for s in train_samples):
        ones = np.ones(scheme.num_points, np.float32)
        visible = np.stack([np.asarray(s.attributes.get("visible", ones), np.float32) for s in train_samples])
    def held_out(specs):  # (spec, name, dataset, crops) of each held-out set (the lead rank's)
        for spec, name in (source_labels(specs) if lead else {}).items():
            ds = read_dataset(spec, cfg.data.scheme, skip_missing=cfg.data.skip_missing)
            yield spec, name, ds, build_cache(ds, m.input_size, m.crop_scale, cache_dir=cfg.data.cache_dir,
                                              progress=progress, skip_bad_images=skip)

    pose = []
    for spec, name, ds, cache in held_out(cfg.data.pose_val):
        no_yaw = [s.id for s in ds.samples if "yaw" not in s.attributes]
        if no_yaw:
            raise ValueError(f"data.pose_val {spec}: {len(no_yaw)} face(s) without a yaw (e.g. {no_yaw[0]}); "
                             "put a yaw.csv (name,yaw_degrees) beside the .pts files")
        pose.append((name, cache, np.array([ds.samples[i].attributes["yaw"] for i in cache.positions()])))
    calibration = [(name, cache) for _, name, _, cache in held_out(cfg.data.trust_calibration)]
    return TrainData(scheme, train_cache, val_cache, repeats, [s.attributes["source"] for s in val_samples],
                     yaw_buckets(val_samples, scheme) if lead else [], visible, pose, calibration)


def validate_pose(model, pose: list[tuple[str, CropCache, np.ndarray]], scheme, input_size: int,
                  preds: list | None = None) -> dict:
    """The AFLW2000-3D protocol on each ``data.pose_val`` set: ``pose_nme_box[NAME 0-30]``,
    ``[NAME 30-60]``, ``[NAME 60-90]``, ``[NAME balanced]`` (percent) and ``pose_n[NAME 0-30]``...
    ``preds``: the model's landmarks on each set's crops, when already computed."""
    out = {}
    for k, (name, cache, yaws) in enumerate(pose):
        if not len(cache):
            continue
        pred = preds[k] if preds is not None else predict_crops(model, cache.images, input_size)
        err = nme(pred, cache.points, scheme, "box")
        for key, value in pose_protocol(err, yaws).items():
            out[f"pose_n[{name} {key[2:]}]" if key.startswith("n ") else f"pose_nme_box[{name} {key}]"] = value
    return out


def calibrate_model(cfg: TrainConfig, model_path, out, coverage: float = 0.9) -> dict:
    """Fit a trust-branch model file's calibration on the config's validation split
    (:func:`validate_trust`) and write the model, calibration included, to ``out``.
    Returns the trust metrics (validation split and ``data.pose_val`` sets)."""
    model, info = load_model(model_path)
    if not model.has_trust:
        raise ModelFileError(f"{model_path}: no trust branch to calibrate (train with model.pip_trust: true)")
    data = load_data(cfg, progress=False)
    if info.landmark_scheme.num_points != data.scheme.num_points or info.input_size != cfg.model.input_size:
        raise ModelFileError(f"{model_path}: {info.landmark_scheme.num_points} points at {info.input_size} px; the "
                             f"config's data has {data.scheme.num_points} points and crops at {cfg.model.input_size} px")
    info.trust, metrics = validate_trust(model, data, data.scheme, info.input_size, coverage=coverage)
    save_model(model, info, out)
    return metrics


def architecture(cfg: TrainConfig, num_points: int) -> Architecture:
    """The network this config asks for (stored in checkpoints and model files, so
    loading rebuilds the same network)."""
    m = cfg.model
    kwargs = {"dropout": m.dropout, "coordconv": m.coordconv, "input_size": m.input_size, "heatmap_beta": m.heatmap_beta}
    if m.head == "heatmap":
        kwargs["heatmap_decode"] = (m.heatmap_decode if m.heatmap_decode != "auto"
                                    else "local" if cfg.loss.name == "awing" else "soft")
    if m.head == "pip":
        kwargs.update(pip_neighbours=m.pip_neighbours, pip_stride=m.pip_stride, pip_score_weight=m.pip_score_weight)
        if m.pip_trust:  # only when set, so that files made before the option read the same
            kwargs["pip_trust"] = True
            if m.pip_trust_kernel != 1:
                kwargs["pip_trust_kernel"] = m.pip_trust_kernel
            if m.pip_trust_points:
                kwargs["pip_trust_points"] = True
    if not m.last_conv:  # only when set, so that files made before the option read the same
        kwargs["last_conv"] = False
    if m.trunk_stride != 32:
        kwargs["trunk_stride"] = m.trunk_stride
    return Architecture(m.backbone, m.head, num_points, kwargs)


TRUST_KEYS = ("head.trust_branch.", "head.trust_points.")  # the PIP head's trust modules in a state dict


def build_network(cfg: TrainConfig, data: TrainData, lead: bool = True) -> tuple[LandmarkNet, Architecture]:
    """The network the config describes (ImageNet trunk, or ``init_from``'s weights), its
    head started from the training mean shape when fresh; and its architecture."""
    m = cfg.model
    arch = architecture(cfg, data.scheme.num_points)
    torch.manual_seed(cfg.seed)
    model = build_model(arch.backbone, arch.num_points, arch.head, m.pretrained, **arch.kwargs)
    fresh_head = True
    if m.init_from:
        start, start_info = load_model(m.init_from)
        start_kw = start_info.architecture().kwargs
        start_trunk = (start_kw.get("last_conv", True), start_kw.get("trunk_stride", 32))
        # another head, another trunk end, or other points (a 68-point start for a 5-point run): its trunk only
        fresh_head = (start_info.head != m.head or len(start.trunk) != len(model.trunk)
                      or start_info.landmark_scheme.num_points != data.scheme.num_points)
        if start_info.backbone != m.backbone:
            raise ModelFileError(f"{m.init_from}: a {start_info.backbone}/{start_info.head} model with "
                                 f"{start_info.landmark_scheme.num_points} points cannot start a "
                                 f"{m.backbone}/{m.head} run with {data.scheme.num_points}")
        if fresh_head:  # another head: the trunk's weights only
            if len(start.trunk) < len(model.trunk):
                raise ModelFileError(f"{m.init_from}: its trunk ends earlier (last_conv, trunk_stride: {start_trunk}) "
                                     f"than this run's ({m.last_conv}, {m.trunk_stride}); set model.last_conv "
                                     "and model.trunk_stride as it has them, or start from a longer trunk")
            # a run that leaves out the start's last blocks (last_conv: false, trunk_stride: 16) takes the rest
            model.trunk.load_state_dict(start.trunk[:len(model.trunk)].state_dict())
            if lead:
                log.info("init_from %s: trunk only (its head is %s on (last_conv, trunk_stride) %s, this run's %s on %s)",
                         m.init_from, start_info.head, start_trunk, m.head, (m.last_conv, m.trunk_stride))
        else:
            mine = model.state_dict()
            # trust modules on one side only, or of another shape, start fresh or are left out
            weights = {k: v for k, v in start.state_dict().items()
                       if not (k.startswith(TRUST_KEYS) and k in mine and mine[k].shape != v.shape)}
            missing, unexpected = model.load_state_dict(weights, strict=False)
            # nothing but the trust modules may differ
            missing = [k for k in missing if not k.startswith(TRUST_KEYS)]
            unexpected = [k for k in unexpected if not k.startswith(TRUST_KEYS)]
            if missing or unexpected:
                raise ModelFileError(f"{m.init_from}: its weights do not fit this network (missing {missing[:3]}, "
                                     f"unexpected {unexpected[:3]})")
    if fresh_head:
        o = (data.train.size - m.input_size) // 2
        model.head.init_mean_shape(torch.from_numpy((data.train.points.mean(0) - o) / (m.input_size - 1)).float())
    return model, arch


def _lock_output(out: Path):
    """Hold an exclusive lock on ``out/.lock`` for the run (released when the process
    ends, however it ends): a second trainer on the same folder is refused."""
    import fcntl
    import os

    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        owner = fh.read().strip() or "another process"
        fh.close()
        raise TrainingError(f"{out}: in use by another training run ({owner}); wait for it or choose another "
                            "--output") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    return fh


def _tidy_for_resume(out: Path, epoch: int) -> None:
    """Before resuming at ``epoch``: remove temp files that killed writes left behind, and
    the ``metrics.jsonl`` lines of epochs after the checkpoint (they are trained again)."""
    for tmp in out.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)
    path = out / "metrics.jsonl"
    if path.is_file():
        lines = path.read_text().splitlines()
        keep = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
        if len(keep) != len(lines):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            tmp.replace(path)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1). Gloo on CPU, NCCL on GPUs."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device: cuda, but no CUDA device is available")
    return torch.device("cuda", rank % torch.cuda.device_count())


def _optimizer(model, oc) -> torch.optim.Optimizer:
    if oc.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=oc.lr, weight_decay=oc.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=oc.lr, momentum=0.9, weight_decay=oc.weight_decay, nesterov=True)


def replicas_identical(model) -> bool:
    """Under DDP: do all ranks hold bit-identical parameters? (BatchNorm statistics
    differ between ranks after their last forward pass by design; DDP re-broadcasts
    rank 0's before every forward, and rank 0's are the ones saved.)"""
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).double() for t in model.parameters()])
    digest = torch.tensor([flat.sum().item(), (flat * torch.arange(len(flat), dtype=torch.float64)).sum().item()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _teacher(cfg: TrainConfig, scheme, device: torch.device):
    """The distillation teacher as a function: student batch (B, 3, s, s) -> the teacher's
    landmarks in the student's normalised crop units. The teacher sees the same crop
    resampled to its own input size; with ``align_corners=True`` pixel centres 0 and
    s - 1 map onto 0 and t - 1, so normalised coordinates are the same in both."""
    t, tinfo = load_model(cfg.distill.teacher)
    where = f"distill.teacher {cfg.distill.teacher}"
    if tinfo.landmark_scheme.num_points != scheme.num_points:
        raise ModelFileError(f"{where}: {tinfo.landmark_scheme.num_points} points, the data has {scheme.num_points}")
    if abs(tinfo.crop_scale - cfg.model.crop_scale) > 1e-6:
        raise ModelFileError(f"{where}: crop_scale {tinfo.crop_scale}, the student's is {cfg.model.crop_scale}; "
                             "they must crop the same way")
    t.eval().requires_grad_(False).to(device)
    size, s = tinfo.input_size, cfg.model.input_size

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        if size != s:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=True,
                                                antialias=size < s)
        return t(x).float()

    return run


def config_differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf where two config dumps differ, except the
    :data:`RESUMABLE_KEYS`."""
    out = []
    for k in sorted(set(saved) | set(now)):
        key = f"{prefix}{k}"
        if key in RESUMABLE_KEYS:
            continue
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, key + ".")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_resume(cfg: TrainConfig, ckpt: dict, out: Path) -> None:
    """Refuse to resume with a config the run was not started with, or a finished run."""
    saved = ckpt.get("config")
    if saved is None and (out / "config.yaml").is_file():  # checkpoints written before configs went into them
        saved = yaml.safe_load((out / "config.yaml").read_text())
    if saved is not None:
        # runs started before every path became absolute hold them relative to the working directory
        saved = resolve_paths(saved, Path.cwd())
        try:  # keys added to the config classes since the run started read as their defaults
            saved = TrainConfig.model_validate(saved).model_dump()
        except ValueError:
            pass
        diff = config_differences(saved, cfg.model_dump())
        if diff:
            raise ResumeError(f"{out}: --resume with a config the run was not started with ({len(diff)} difference(s): "
                              + "; ".join(diff[:6]) + "); start a new run (another --output), or resume as it was")
    if ckpt["epoch"] >= cfg.optim.epochs:
        raise ResumeError(f"{out}: already finished ({ckpt['epoch']} of {cfg.optim.epochs} epochs); nothing to resume. "
                          "To train longer, start a new run with model.init_from")


def train_one_epoch(net, model: LandmarkNet, data: CropDataset, order: np.ndarray, opt, sched, loss_fn, cfg: TrainConfig,
                    device, step: int, rank: int = 0, world: int = 1, teacher=None, ema=None, progress: bool = False,
                    desc: str = "", start: int = 0, running: float = 0.0, seen: int = 0,
                    checkpoint=None) -> tuple[float, int, int]:
    """One pass over ``order`` (indices into ``data``) in global batches of
    ``batch_size * world`` (this rank takes its share), from batch ``start`` (a run
    resumed mid-epoch, with the loss sum and count so far). Returns ``(mean loss, faces
    seen, step)``; stops early at ``cfg.max_steps``. ``checkpoint(batches_done, running,
    seen)`` is called after each step (it decides whether to write)."""
    on_gpu = device.type == "cuda"
    global_batch = cfg.optim.batch_size * world
    steps = max(1, len(order) // global_batch)
    net.train()
    if cfg.optim.trust_only:  # the trust branch alone learns; every other weight and statistic stays
        model.eval()
        for module in model.head.trust_modules():
            module.train()
    bar = range(start, steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc=desc, unit="step", leave=False)
    for b in bar:
        items = [data[i] for i in order[b * global_batch:(b + 1) * global_batch][rank::world]]
        x = torch.stack([it[0] for it in items]).to(device, non_blocking=True)
        y = torch.stack([it[1] for it in items]).to(device, non_blocking=True)
        v = torch.stack([it[2] for it in items]).to(device, non_blocking=True)
        if on_gpu and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu and cfg.amp):
            raw = net(x)
            if cfg.optim.trust_only:  # the landmarks are not trained: no landmark loss, no teacher
                loss = model.head.trust_loss(raw, y, v)
            else:
                loss = model.head.loss(raw, y, loss_fn)
                if teacher is not None:
                    w = cfg.distill.weight
                    loss = (1 - w) * loss + w * model.head.loss(raw, teacher(x), loss_fn)
                if getattr(model.head, "trust", False):
                    loss = loss + model.head.trust_loss(raw, y, v)
        if not torch.isfinite(loss.detach()):
            raise TrainingError(f"{desc or 'training'}, step {step + 1}: the loss is {loss.item()} (not finite): the run "
                                "diverged and was stopped; nothing of this epoch was saved (try a lower optim.lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        running += loss.item() * len(x)
        seen += len(x)
        if progress:
            bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if cfg.max_steps and step >= cfg.max_steps:
            break
        if checkpoint is not None and b + 1 < steps:
            checkpoint(b + 1, running, seen, step)
    return running / max(seen, 1), seen, step


def rng_states(transform) -> list:
    """The random state of an Albumentations pipeline and of every op in it (each has its
    own generators), in a fixed order: what a mid-epoch checkpoint keeps."""
    out = [(transform.random_generator.bit_generator.state, transform.py_random.getstate())]
    for t in getattr(transform, "transforms", []):
        out += rng_states(t)
    return out


def set_rng_states(transform, states: list) -> list:
    """Restore :func:`rng_states`; returns what was not used (for the recursion)."""
    (np_state, py_state), rest = states[0], states[1:]
    transform.random_generator.bit_generator.state = np_state
    transform.py_random.setstate(tuple(py_state[:1]) + (tuple(py_state[1]),) + tuple(py_state[2:]))
    for t in getattr(transform, "transforms", []):
        rest = set_rng_states(t, rest)
    return rest


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, splits: Splits | None = None) -> Path:
    """Train, writing ``last.pt`` (checkpoint), ``best.safetensors`` and ``final.safetensors``
    (model files), ``metrics.jsonl`` and ``config.yaml`` into ``cfg.output``. Returns the
    path of the best model file. Under ``torchrun`` every rank trains on its shard of
    each global batch (DDP); rank 0 alone validates, logs and writes files.
    ``splits``: train on these datasets instead of the config's ``data`` sources
    (used by out-of-fold cleaning)."""
    rank, world = _distributed()
    lead = rank == 0
    device = _device(cfg, rank)
    progress = progress and lead
    out = Path(cfg.output)
    ckpt_path = out / "last.pt"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ck = None
    if resume and not ckpt_path.exists():
        raise ResumeError(f"{ckpt_path} does not exist: nothing to resume (drop --resume to start this run)")
    lock = _lock_output(out) if lead else None  # noqa: F841 (held until the run ends)
    if resume:
        ck = load_checkpoint(ckpt_path)
        check_resume(cfg, ck, out)
        if lead:
            _tidy_for_resume(out, ck["epoch"])
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another output")
    if lead and ck is None:  # a resumed run keeps the config it was started with
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))

    data = load_data(cfg, splits, progress=progress, lead=lead)
    fingerprint = data_fingerprint(data)
    if ck is not None and ck.get("data") not in (None, fingerprint):
        raise ResumeError(f"{out}: the training data changed since the run started ({ck['data']['train']} training "
                          f"and {ck['data']['val']} validation faces then, {fingerprint['train']} and "
                          f"{fingerprint['val']} now, or other files); resuming would not continue the same run. "
                          "Restore the data, or start a new run")
    scheme, m, oc = data.scheme, cfg.model, cfg.optim
    model, arch = build_network(cfg, data, lead)
    loss_fn = build_loss(cfg.loss.name, w=cfg.loss.w, eps=cfg.loss.eps)
    teacher = _teacher(cfg, scheme, device) if cfg.distill and not cfg.optim.trust_only else None
    opt = _optimizer(model, oc)

    index = np.repeat(np.arange(len(data.train)), data.repeats)
    steps_per_epoch = max(1, len(index) // (oc.batch_size * world))
    total = steps_per_epoch * oc.epochs
    warmup = int(oc.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, oc.schedule))

    start_epoch, step, best = 0, 0, float("inf")
    mid = None  # a checkpoint written inside an epoch: where in it to go on
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, step, best = ck["epoch"], ck["step"], ck["best"]
        mid = ck.get("mid_epoch")
        if lead:
            where = f", batch {mid['batches']}" if mid else ""
            log.info("resumed from %s at epoch %d%s", ckpt_path, start_epoch + (1 if mid else 0), where)
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = RawOutputs(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    ema = None
    if oc.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(oc.ema), use_buffers=True)
        if ck is not None and "ema" in ck:
            ema.load_state_dict(ck["ema"])
    # What is validated and saved: the moving average when there is one.
    final = (lambda: ema.module) if ema is not None else (lambda: model)

    info = ModelInfo(scheme=scheme.to_dict(), backbone=m.backbone, head=m.head, input_size=m.input_size,
                     crop_scale=m.crop_scale, training_data=cfg.note or "; ".join(s.spec for s in cfg.data.train),
                     recipe={"config": cfg.model_dump(), "model_kwargs": arch.kwargs, "world_size": world,
                             "inference": cfg.inference.model_dump()},
                     network=asdict(arch),
                     # the built-in detector calibrations are for the 68 iBUG points; other schemes
                     # get theirs fitted after training (facepoints.deploy.detector_fit)
                     box_calibrations=calibration_record() if scheme.num_points == 68 else {})
    transform = build_transform(cfg.augment, m.input_size, train=True)
    crops = CropDataset(data.train, transform, scheme, m.input_size, data.train_visible,
                        cfg.augment.occluder_photos if cfg.augment.enabled else 0.0)
    last_save = [time.time()]

    def state_now(epoch_done: int) -> dict:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": epoch_done, "step": step, "best": best, "config": cfg.model_dump(),
                 "architecture": asdict(arch), "data": fingerprint}
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    for epoch in range(start_epoch, oc.epochs):
        seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(seed + rank)
        transform.set_random_seed(seed * 1_000 + rank)
        order = np.random.default_rng(seed).permutation(index)
        t_epoch = time.time()
        begin, running0, seen0 = 0, 0.0, 0
        if mid is not None:  # go on inside the epoch, with the random state it had there
            begin, running0, seen0 = mid["batches"], mid["running"], mid["seen"]
            torch.set_rng_state(mid["torch_rng"])
            set_rng_states(transform, mid["augment_rng"])
            mid = None

        def checkpoint(batches: int, running: float, seen: int, step_now: int, epoch=epoch) -> None:
            every = cfg.checkpoint_minutes
            if not lead or every is None or time.time() - last_save[0] < every * 60:
                return
            state = state_now(epoch)
            state["step"] = step_now
            state["mid_epoch"] = {"batches": batches, "running": running, "seen": seen,
                                  "torch_rng": torch.get_rng_state(), "augment_rng": rng_states(transform)}
            save_checkpoint(state, ckpt_path)
            last_save[0] = time.time()

        loss, seen, step = train_one_epoch(net, model, crops, order, opt, sched, loss_fn, cfg, device, step, rank, world,
                                           teacher, ema, progress, desc=f"epoch {epoch + 1}/{oc.epochs}", start=begin,
                                           running=running0, seen=seen0, checkpoint=checkpoint if world == 1 else None)
        train_time = time.time() - t_epoch
        if lead:
            t_val = time.time()
            # a trust model's one pass over the validation and pose crops serves all three reports
            outputs = trust_passes(final(), data, m.input_size) if final().has_trust and len(data.val) else None
            metrics = validate(final(), data.val, scheme, m.input_size, data.val_sources, data.val_yaws,
                               pred=outputs[0][0] if outputs else None)
            metrics.update(validate_pose(final(), data.pose, scheme, m.input_size,
                                         preds=[o[0] for o in outputs[1:1 + len(data.pose)]] if outputs else None))
            if outputs:
                info.trust, trust_metrics = validate_trust(final(), data, scheme, m.input_size, outputs)
                metrics.update(trust_metrics)
            val_time = time.time() - t_val
            rec = {"epoch": epoch + 1, "step": step, "loss": loss, "lr": sched.get_last_lr()[0],
                   "train_seconds": round(train_time, 1), "val_seconds": round(val_time, 1),
                   "images_per_second": round(seen * world / max(train_time, 1e-9), 1), **metrics}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            msg = f"epoch {epoch + 1}/{oc.epochs} loss {loss:.4f}"
            if metrics.get("val_nme_io") is not None:
                msg += f" val NME(io) {metrics['val_nme_io']:.2f}% FR10 {metrics['val_fr10']:.1f}%"
            for key in (k for k in metrics if k.startswith("pose_nme_box[") and k.endswith(" balanced]")):
                msg += f" {key[len('pose_nme_box['):-len(' balanced]')]} balanced NME(box) {metrics[key]:.2f}%"
            log.info("%s [train %.0fs, %s img/s; validation %.0fs]", msg, train_time, rec["images_per_second"], val_time)
            score = metrics.get("val_nme_io", loss)
            if not math.isfinite(score):
                raise TrainingError(f"epoch {epoch + 1}: validation NME is {score} (not finite): the weights are damaged; "
                                    "stopped without saving this epoch (try a lower optim.lr)")
            info.metrics = {"epoch": epoch + 1, **metrics}
            if score < best:
                best = score
                save_model(final(), info, out / "best.safetensors")
            save_checkpoint(state_now(epoch + 1), ckpt_path)
            last_save[0] = time.time()
        if cfg.max_steps and step >= cfg.max_steps:
            break
    if world > 1:
        same = replicas_identical(model)
        if lead:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"world_size": world, "replicas_identical": same, "step": step}) + "\n")
        import torch.distributed as torch_dist

        torch_dist.barrier()
    if lead:
        save_model(final(), info, out / "final.safetensors")
        if not (out / "best.safetensors").exists():
            save_model(final(), info, out / "best.safetensors")
    return out / "best.safetensors"
