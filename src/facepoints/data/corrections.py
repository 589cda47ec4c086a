"""Hand corrections to a dataset, kept in a sidecar file beside it.

``facepoints review`` writes them; ``read_dataset`` applies them. The original
annotation files are never changed. The sidecar of ``FORMAT:PATH`` is
``PATH.corrections.json`` (for a 300-W folder ``data/afw``: ``data/afw.corrections.json``)::

    {"version": 1,
     "samples": {
        "image_001.jpg": {"status": "accepted"},
        "image_002.jpg": {"status": "dropped"},
        "image_003.jpg": {"status": "fixed", "landmarks": [[x, y], ...]}}}

Keys are sample ids (what ``Sample.id`` says); coordinates are 0-based pixel centres,
as everywhere in facepoints. ``accepted`` changes nothing: it records that a person
looked. ``dropped`` samples are left out of the dataset and counted in its warnings;
``fixed`` landmarks replace the annotated ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facepoints.data.samples import AnnotationError, Dataset, Sample

STATUSES = ("accepted", "dropped", "fixed")
SUFFIX = ".corrections.json"


def sidecar_path(path: str | Path) -> Path:
    """Where the corrections of the dataset at ``path`` live."""
    p = Path(path)
    if not p.name:  # "." or "/": name the sidecar after the real folder
        p = p.resolve()
    return p.with_name(p.name + SUFFIX)


# a fixed point may lie this far (fraction of the image's width/height) beyond its border
FIX_MARGIN = 0.5


def load_corrections(path: str | Path) -> dict[str, dict]:
    """The sidecar's ``samples`` mapping, checked; ``{}`` when there is no sidecar."""
    p = Path(path)
    try:
        if not p.is_file():
            return {}
    except (OSError, ValueError):  # a name too long for the file system cannot have a sidecar
        return {}
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(p, f"not valid JSON: {e.msg}", e.lineno) from None
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, dict):
        raise AnnotationError(p, 'expected an object with a "samples" mapping of sample id to correction')
    for sid, c in samples.items():
        if not isinstance(c, dict) or c.get("status") not in STATUSES:
            raise AnnotationError(p, f"sample {sid!r}: status must be one of {', '.join(STATUSES)}")
        if c["status"] == "fixed":
            lm = c.get("landmarks")
            if not isinstance(lm, list) or not lm or any(not isinstance(q, list) or len(q) != 2 for q in lm):
                raise AnnotationError(p, f"sample {sid!r}: a fixed sample needs \"landmarks\": [[x, y], ...]")
            try:
                arr = np.asarray(lm, dtype=np.float64)
            except (TypeError, ValueError):
                raise AnnotationError(p, f"sample {sid!r}: landmarks must be numbers") from None
            if not np.isfinite(arr).all():
                raise AnnotationError(p, f"sample {sid!r}: landmarks must be finite numbers")
    return samples


def save_corrections(path: str | Path, samples: dict[str, dict], dataset: str = "") -> None:
    """Write the sidecar atomically (a reader never sees half a file)."""
    p = Path(path)
    body = {"version": 1, "dataset": dataset, "samples": samples}
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, p)


def _check_near_image(pts: np.ndarray, s: Sample, where) -> None:
    from facepoints.data.images import ImageError, image_size

    try:
        w, h = image_size(s.image)
    except ImageError:
        return  # the image's own error is reported where it is read
    lo, hi = -FIX_MARGIN * np.array([w, h]), (1 + FIX_MARGIN) * np.array([w, h])
    bad = np.flatnonzero(((pts < lo) | (pts > hi)).any(1))
    if len(bad):
        x, y = pts[bad[0]]
        raise AnnotationError(where, f"sample {s.id!r}: corrected point {int(bad[0])} at ({x:.6g}, {y:.6g}) lies outside "
                                     f"its {w}x{h} image by more than {FIX_MARGIN:g} of its size ({len(bad)} point(s)); "
                                     "fix or remove this correction")


def apply_corrections(ds: Dataset, samples: dict[str, dict], where: str | Path) -> Dataset:
    """``ds`` with dropped samples left out (counted in ``warnings``) and fixed
    landmarks in place of the annotated ones. ``where`` names the sidecar in messages."""
    if not samples:
        return ds
    n = ds.scheme.num_points
    kept: list[Sample] = []
    dropped = fixed = 0
    for s in ds.samples:
        c = samples.get(s.id)
        if c is None or c["status"] == "accepted":
            kept.append(s)
        elif c["status"] == "dropped":
            dropped += 1
        else:
            pts = np.asarray(c["landmarks"], dtype=np.float32)
            if pts.shape != (n, 2):
                raise AnnotationError(where, f"sample {s.id!r}: {len(pts)} corrected points, the dataset has {n}")
            _check_near_image(pts, s, where)
            kept.append(Sample(s.image, pts, s.id, source=f"{where} (corrected; was {s.source})", box=s.box,
                               attributes=dict(s.attributes)))
            fixed += 1
    warnings = list(ds.warnings)
    if dropped:
        warnings.append(f"{dropped} of {len(ds.samples)} samples dropped by review ({where}); left out")
    if fixed:
        warnings.append(f"{fixed} samples have landmarks fixed by review ({where})")
    known = {s.id for s in ds.samples}
    stale = [sid for sid in samples if sid not in known]
    if stale:
        warnings.append(f"{len(stale)} corrections in {where} name samples not in the dataset, e.g. {stale[0]!r}")
    return Dataset(ds.name, ds.scheme, kept, warnings)
