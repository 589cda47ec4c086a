"""Training and validation splits: every source read, exclusions left out, whole groups
(a YTF person, a 300-W photo) held out by a stable hash, per source."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepoints.data.formats import read_dataset
from facepoints.data.samples import AnnotationError, Dataset

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    repeats: list[int]  # per training sample


def group_hash(group: str, seed: int) -> int:
    """A stable 64-bit hash of (seed, group): what splits and folds are drawn by, so a
    group's side never changes when other samples come or go."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{group}".encode()).digest()[:8], "big")


def in_val(group: str, fraction: float, seed: int) -> bool:
    """Is ``group`` held out? (:func:`group_hash`)"""
    return group_hash(group, seed) / 2**64 < fraction


def read_exclusions(path: str | None) -> set[str]:
    """Sample ids to leave out: one per line (``#`` comments), or ``clean --json``'s output."""
    if not path:
        return set()
    text = Path(path).read_text()
    if text.lstrip().startswith("{"):
        return {str(f["id"]) for f in json.loads(text).get("flagged", [])}
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def split_sources(d, seed: int) -> Splits:
    """The splits a data section (``training.config.DataConfig``) describes: each source's
    groups held out by :func:`in_val` (``val_fraction``, per source if it says), its other
    samples repeated ``repeat`` times per epoch (0: validation only); ``val`` datasets
    validated whole; ``subset`` and ``balance`` applied to the training side."""
    exclude = read_exclusions(d.exclude)
    train, val, repeats, scheme = [], [], [], None
    for src in d.train:
        ds = read_dataset(src.spec, d.scheme, skip_missing=d.skip_missing, corrections=d.corrections)
        for w in ds.warnings:
            log.warning("warning: %s: %s", src.spec, w)
        scheme = scheme or ds.scheme
        if ds.scheme.num_points != scheme.num_points:
            raise AnnotationError(src.spec.partition(":")[2], f"{ds.scheme.num_points} points, but earlier sources "
                                  f"have {scheme.num_points}")
        frac = d.val_fraction if src.val_fraction is None else src.val_fraction
        for s in ds.samples:
            if s.id in exclude:
                continue
            s.attributes["source"] = src.spec
            if in_val(s.group, frac, seed):
                val.append(s)
            elif src.repeat:
                train.append(s)
                repeats.append(src.repeat)
    for spec in d.val:
        ds = read_dataset(spec, d.scheme, skip_missing=d.skip_missing, corrections=d.corrections)
        if scheme is not None and ds.scheme.num_points != scheme.num_points:
            raise AnnotationError(spec.partition(":")[2], f"data.val: {ds.scheme.num_points} points, but the training "
                                  f"sources have {scheme.num_points}; validate on data of the same scheme")
        for s in ds.samples:
            s.attributes["source"] = spec
        val.extend(ds.samples)
    if getattr(d, "val_subset", None) is not None and d.val_subset < len(val):
        keep = np.random.default_rng([seed, 0x5A1]).choice(len(val), d.val_subset, replace=False)
        val = [val[i] for i in sorted(keep)]
    if d.subset is not None and d.subset < len(train):
        keep = np.random.default_rng(seed).choice(len(train), d.subset, replace=False)
        keep.sort()
        train = [train[i] for i in keep]
        repeats = [repeats[i] for i in keep]
    if d.balance is not None and train:
        from facepoints.data.pose import balance_repeats, dataset_poses

        b = d.balance
        extra, info = balance_repeats(dataset_poses(train, scheme).yaw, b.bins, b.power, b.max_repeat, [seed, 0xBA1])
        repeats = [r * int(e) for r, e in zip(repeats, extra)]
        log.info("balance by yaw: faces per bucket %s -> %s (before source repeats)", info["counts"], info["counts_after"])
    return Splits(Dataset("train", scheme, train), Dataset("val", scheme, val), repeats)
