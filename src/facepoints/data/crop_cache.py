"""Decode once, crop once: the training set as an in-memory array of face crops.

Each face is cropped around its landmark box with ``context`` times the model's view,
at ``context * input_size`` pixels, and kept as uint8 together with its landmarks in
crop coordinates. Epochs then only augment small arrays. The cache is also stored on
disk (keyed by the samples and the crop settings), so a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepoints.data.crops import crop_matrix, square_from_box, transform_points, warp
from facepoints.data.images import ImageError, read_image
from facepoints.data.samples import Dataset, landmark_box

log = logging.getLogger("facepoints.training")


@dataclass
class CropCache:
    images: np.ndarray  # (M, S, S, 3) uint8
    points: np.ndarray  # (M, N, 2) float32, crop pixel coordinates
    ids: list[str]
    size: int
    skipped: list[str] = field(default_factory=list)  # "image: reason" of images left out
    kept: list[int] | None = None  # dataset positions of the cached samples (None: all)

    def positions(self) -> list[int]:
        return list(range(len(self.ids))) if self.kept is None else self.kept

    def __len__(self) -> int:
        return len(self.ids)


def _key(ds: Dataset, size: int, scale: float) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([size, scale, ds.scheme.num_points]).encode())
    for s in ds.samples:
        st = s.image.stat()
        # ctime and inode too: a file replaced by another of the same size with its mtime
        # set back still changes them (nobody can set ctime), so the old crop is not reused
        h.update(f"{s.image}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}".encode())
        h.update(np.ascontiguousarray(s.landmarks, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def crop_sample(image: np.ndarray, points: np.ndarray, size: int, scale: float):
    """The square crop around ``points`` (side = longest box side x ``scale``)."""
    cx, cy, side = square_from_box(landmark_box(points), scale)
    m = crop_matrix(cx, cy, side, size)
    return warp(image, m, size), transform_points(points, m)


def build_cache(ds: Dataset, input_size: int, crop_scale: float, context: float = 1.5,
                cache_dir: str | Path | None = None, progress: bool = True,
                skip_bad_images: bool = False) -> CropCache:
    """Crop every sample. Unreadable images are all reported together in one
    ``ImageError`` (one line per file), or with ``skip_bad_images`` left out of the
    cache and listed in ``CropCache.skipped``."""
    size = int(round(input_size * context))
    scale = crop_scale * context
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"crops-{_key(ds, size, scale)}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                return CropCache(z["images"], z["points"], [str(i) for i in z["ids"]], size)
    n = len(ds)
    images = np.zeros((n, size, size, 3), np.uint8)
    points = np.zeros((n, ds.scheme.num_points, 2), np.float32)
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"cropping {ds.name}", unit="img", leave=False)
    bad: dict[int, str] = {}
    for i in it:
        s = ds.samples[i]
        try:
            images[i], points[i] = crop_sample(read_image(s.image), s.landmarks, size, scale)
        except ImageError as e:
            bad[i] = str(e)
    if bad and not skip_bad_images:
        raise ImageError(f"{len(bad)} of {n} training images cannot be read "
                         "(set data.skip_bad_images: true to leave them out):\n" + "\n".join(bad.values()))
    keep = [i for i in range(n) if i not in bad]
    if not bad:  # no copy of the arrays
        cache = CropCache(images, points, ds.ids(), size)
    else:
        cache = CropCache(images[keep], points[keep], [ds.samples[i].id for i in keep], size, list(bad.values()), keep)
    if path is not None and not bad:
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, images=images, points=points, ids=np.array(cache.ids))
            os.replace(tmp, path)
        except OSError as e:  # only a cache: a full disk or a read-only folder costs the next run time, no more
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            log.warning("warning: crop cache not saved to %s (%s); training goes on without it", path.parent,
                        e.strerror or e)
    return cache
