"""Finding bad annotations: score every sample of a dataset, say why, rank.

Each check gives every sample a score in units of a *robust z-score*: distance from
the dataset's median in units of 1.4826 x MAD (the standard deviation a Gaussian
would have), widened for checks that are heavy-tailed on good data (see
:func:`robust_z`), so checks on different quantities can be compared. A sample's
score is the largest of its checks' scores; it is *flagged* when that is at least
``threshold`` (``DEFAULT_THRESHOLD`` = 5). For a Gaussian quantity 5 would be one
good sample in several million; real checks have heavier tails, and 5 was chosen on
a development draw of the corrupted 300-W/YTF copies of ``benchmarks/cleaning.py``
(seed 0; the benchmark reports another draw): with the default-recipe model it flagged
0.1-0.7 % of the untouched samples and 93-96 % of the corrupted ones. Checks that no
usable label can fail (a NaN, points far outside the image, a collapsed shape, an
unreadable image) give a fixed score ``HARD`` (100), above any threshold.

Heuristics (labels and image sizes only):

``nonfinite``, ``unreadable``, ``outside_image``, ``collapsed``
    hard checks (``outside_image``: beyond ``margin`` x the image's width/height;
    ``collapsed``: the points span under 2 px, take fewer than 3 distinct positions,
    or lie on a line);
``duplicates``
    points on top of each other where the shape model's reconstruction of that face
    puts them apart (the lids of a closed eye, the lips of a closed mouth and the
    far side of a profile do touch, and are close in the reconstruction too);
``aspect``, ``size``
    the landmark box's aspect ratio, and its size relative to the image, far from
    the dataset's (two-sided, on the log);
``swapped_lr``
    (schemes with a flip table) after similarity alignment to the shape model, the
    shape with its left and right labels exchanged (re-indexed through the flip
    table) fits much better than the shape as labelled;
``shape``, ``shape[GROUP]``
    residual after similarity (Procrustes, no reflection) alignment to a robust,
    iterated mean shape and projection on its first few modes of variation (a point
    distribution model fitted on the best-fitting 80 %, so that pose and expression
    are not errors), over all points and per group of the scheme;
``box_mismatch``
    where the format carries a face box: the box's centre offset and size relative
    to the landmarks, against the dataset's usual relation.

Model (``predictor`` given, or ``predictions`` computed elsewhere, e.g. out of fold
with :func:`out_of_fold_predictions`): a trained model predicts each face from the
crop around its own labels, then ``refine`` (2) times more from the crop around its
previous answer, so that a shifted or scaled label box does not drag the prediction
along. The disagreement is split into a similarity transform taking the prediction
onto the labels (``model_shift``, ``model_scale``, ``model_rotation``; fitted with
each point weighted by how reliably the model places it) and what is left after it
(``model_local``, ``model_local[GROUP]``), in units of the face size (``sqrt(w * h)``
of the labels' tight box). The model's systematic bias (the median disagreement
over the dataset, per point) is taken off first.

A model trained on the very images being cleaned has seen their labels: its
residuals on them are smaller than on new data, and it may have learnt a label
error. Out-of-fold predictions avoid that at the cost of training k models
(:func:`out_of_fold_predictions` is the hook; ``facepoints clean`` does not train).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Callable

import numpy as np

from facepoints.data.samples import Dataset, landmark_box

# A sample that fails a hard check gets this score: above any sensible threshold.
HARD = 100.0
# Flag a sample when one of its checks is this many robust standard deviations out
# (see the module docstring for how it was chosen).
DEFAULT_THRESHOLD = 5.0
# Fraction of the samples (the best fitting) the mean shape and shape model are fitted on.
INLIER_FRACTION = 0.8


@dataclass
class SampleScore:
    """The result for one sample. ``checks`` maps a check name to its score."""

    index: int
    id: str
    score: float
    reasons: list[str]
    checks: dict[str, float]
    flagged: bool = False
    prediction: np.ndarray | None = None

    def to_dict(self, with_checks: bool = False) -> dict:
        d = {"id": self.id, "score": round(float(self.score), 3), "reasons": list(self.reasons)}
        if with_checks:
            d["flagged"] = self.flagged
            d["checks"] = {k: round(float(v), 3) for k, v in sorted(self.checks.items())}
        return d


@dataclass
class CleanReport:
    dataset: str
    scheme: str
    threshold: float
    model: str | None
    ranked: list[SampleScore]  # highest score first
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ranked)

    @property
    def flagged(self) -> list[SampleScore]:
        return [s for s in self.ranked if s.flagged]

    def to_json(self, all_samples: bool = False) -> dict:
        """The ``facepoints clean --json`` object; ``all_samples`` adds every sample's
        check scores (what ``report.json`` holds)."""
        out = {"n": self.n, "flagged": [s.to_dict() for s in self.flagged], "threshold": self.threshold,
               "dataset": self.dataset, "scheme": self.scheme, "model": self.model}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if all_samples:
            out["samples"] = [s.to_dict(with_checks=True) for s in self.ranked]
        return out


# --------------------------------------------------------------------------- statistics


_Q90_ONE, _Q90_TWO = NormalDist().inv_cdf(0.9), NormalDist().inv_cdf(0.95)


def robust_z(x, floor: float = 1e-9, two_sided: bool = False, tail: bool = True) -> np.ndarray:
    """``(x - median) / scale`` over the finite values (NaN stays NaN); ``two_sided``:
    the absolute value.

    ``scale`` is ``1.4826 * MAD`` (a Gaussian's standard deviation), at least
    ``floor``, and, with ``tail``, at least what the 90th percentile of the
    deviations implies for a Gaussian, capped at 3 times the MAD scale: a check whose
    values are heavy-tailed on good data (a model's error on hard faces) then counts
    less per unit than a light-tailed one, while up to 10 % of bad samples (3 times
    more at most) cannot hide themselves by inflating it."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.full_like(x, np.nan)
    med = np.median(x[ok])
    dev = x[ok] - med
    mad_scale = max(1.4826 * float(np.median(np.abs(dev))), floor)
    scale = mad_scale
    if tail and ok.sum() >= 10:
        q = np.quantile(np.abs(dev), 0.9) / _Q90_TWO if two_sided else np.quantile(dev, 0.9) / _Q90_ONE
        scale = min(max(scale, float(q)), 3 * mad_scale)
    z = (x - med) / scale
    return np.abs(z) if two_sided else z


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def _normalise(z: np.ndarray) -> np.ndarray:
    """Centre each shape (complex, (..., N)) and scale it to unit RMS radius."""
    z = z - z.mean(-1, keepdims=True)
    r = np.sqrt((np.abs(z) ** 2).mean(-1, keepdims=True))
    return z / np.where(r > 0, r, 1.0)


def _align(z: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Similarity-align centred shapes ``z`` (S, N) to ``target`` (N,), no reflection:
    the complex factor ``a`` minimising ``|a z - target|``."""
    a = (np.conj(z) @ target) / np.maximum((np.abs(z) ** 2).sum(-1), 1e-12)
    return a[:, None] * z


class ShapeModel:
    """Robust mean shape and point distribution model of centred, unit-size shapes.

    ``fit``: align every shape to the current mean (similarity, no reflection), keep
    the best-fitting ``INLIER_FRACTION``, average them, repeat; then PCA of the
    aligned inliers, keeping ``modes`` modes (by default as many as explain 90 % of
    the variance, at most 8 and at most a quarter of the inliers)."""

    def __init__(self, shapes: np.ndarray, modes: int | None = None, iterations: int = 6):
        z = _normalise(shapes)
        mean = _normalise(np.median(z.real, 0) + 1j * np.median(z.imag, 0))
        keep = np.ones(len(z), bool)
        for _ in range(iterations):
            aligned = _align(z, mean)
            res = np.sqrt((np.abs(aligned - mean) ** 2).mean(-1))
            keep = res <= np.quantile(res, INLIER_FRACTION)
            new = _normalise(aligned[keep].mean(0))
            mean = _normalise(_align(new[None], mean)[0])
        self.mean = mean
        x = _real(_align(z[keep], mean))
        self.mu = x.mean(0)
        if modes is None:
            _, s, _ = np.linalg.svd(x - self.mu, full_matrices=False)
            var = s ** 2 / max((s ** 2).sum(), 1e-12)
            modes = int(np.searchsorted(np.cumsum(var), 0.9) + 1)
            modes = min(modes, 8, max(0, keep.sum() // 4))
        self.modes = np.zeros((0, x.shape[1]))
        if modes > 0 and len(x) > 1:
            _, _, vt = np.linalg.svd(x - self.mu, full_matrices=False)
            self.modes = vt[:modes]

    def fit(self, shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For complex shapes (S, N): the per-point residual (S, N) after similarity
        alignment and projection on the modes, and the model's reconstruction (S, N)
        of each (complex, in the unit-size frame the residual is measured in)."""
        z = _normalise(shapes)
        # align to the mean, then (twice) to each shape's own reconstruction
        aligned = _align(z, self.mean)
        for _ in range(3):
            x = _real(aligned) - self.mu
            recon = self.mu + (x @ self.modes.T) @ self.modes
            a = (np.conj(z) * _complex_from_real(recon)).sum(-1) / np.maximum((np.abs(z) ** 2).sum(-1), 1e-12)
            aligned = a[:, None] * z
        x = _real(aligned) - self.mu
        proj = (x @ self.modes.T) @ self.modes
        r = x - proj
        n = z.shape[-1]
        return np.hypot(r[:, :n], r[:, n:]), _complex_from_real(self.mu + proj)

    def residual(self, shapes: np.ndarray) -> np.ndarray:
        return self.fit(shapes)[0]


def _cmedian(z: np.ndarray, axis=None):
    return np.median(z.real, axis=axis) + 1j * np.median(z.imag, axis=axis)


def _real(z: np.ndarray) -> np.ndarray:
    return np.concatenate([z.real, z.imag], axis=-1)


def _complex_from_real(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1] // 2
    return x[..., :n] + 1j * x[..., n:]


# --------------------------------------------------------------------------- model predictions


def model_predictions(ds: Dataset, predictor, refine: int = 2, usable: np.ndarray | None = None,
                      progress: bool = False, start_boxes: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Predictions (S, N, 2), re-cropped ``refine`` times around the prediction; NaN
    where a sample is not usable or its image cannot be read (listed in the second
    return value).

    ``start_boxes`` (S, 4), e.g. :func:`matched_detections`: where finite, the first
    crop comes from that box instead of the sample's label box, so that the labels
    themselves (possibly the error being looked for: scaled, shifted, another photo's)
    do not choose the crop; a weak model started from a wrong crop tends to follow it."""
    from facepoints.data.images import ImageError, read_image

    if predictor.scheme.num_points != ds.scheme.num_points:
        raise ValueError(f"the model predicts {predictor.scheme.num_points} points, dataset {ds.name!r} "
                         f"has {ds.scheme.num_points}; use a model of this scheme or --no-model")
    n = ds.scheme.num_points
    out = np.full((len(ds), n, 2), np.nan, np.float64)
    errors: list[str] = []
    it = range(len(ds))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="model", unit="face", leave=False)
    for i in it:
        s = ds.samples[i]
        if usable is not None and not usable[i]:
            continue
        try:
            img = read_image(s.image)
        except ImageError as e:
            errors.append(str(e))
            continue
        start = landmark_box(s.landmarks)
        if start_boxes is not None and np.isfinite(start_boxes[i]).all():
            start = start_boxes[i]
        p = predictor.landmarks_in_boxes(img, np.asarray(start, np.float64)[None])[0]
        for _ in range(refine):
            p = predictor.landmarks_in_boxes(img, landmark_box(p)[None])[0]
        out[i] = p
    return out, errors


def matched_detections(ds: Dataset, detector, min_iou: float = 0.1, progress: bool = False) -> np.ndarray:
    """(S, 4) for each sample the landmark-convention box (``detector.to_landmark_box``)
    of the detection that overlaps its label box most (IoU >= ``min_iou``); NaN where
    none does or the image cannot be read. Independent of the labels' size and place,
    so it both starts the model's crops and is a check of its own (``detector_*``)."""
    from facepoints.data.crops import box_iou
    from facepoints.data.images import ImageError, read_image

    out = np.full((len(ds), 4), np.nan)
    it = range(len(ds))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="detector", unit="image", leave=False)
    for i in it:
        s = ds.samples[i]
        if not np.isfinite(s.landmarks).all():
            continue
        try:
            img = read_image(s.image)
        except ImageError:
            continue
        det = detector.detect(img)
        if len(det) == 0:
            continue
        boxes = np.asarray(detector.to_landmark_box(det.boxes), np.float64).reshape(-1, 4)
        iou = box_iou(boxes, landmark_box(s.landmarks))
        if iou.max() >= min_iou:
            out[i] = boxes[int(np.argmax(iou))]
    return out


def _fold(group: str, k: int, seed: int) -> int:
    h = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") % k


def out_of_fold_predictions(ds: Dataset, make_predictor: Callable[[Dataset], object], k: int = 5,
                            seed: int = 0, refine: int = 2, progress: bool = False,
                            start_boxes: np.ndarray | None = None) -> np.ndarray:
    """Predictions (S, N, 2) where each sample's comes from a model that never saw it.

    The samples are split into ``k`` folds by ``Sample.group`` (faces of one photo or
    one person stay together); ``make_predictor(train_dataset)`` must train a model on
    the other folds and return a ``Predictor``. Pass the result to
    ``score_dataset(..., predictions=...)``. Training k models is expensive: this is
    a hook, ``facepoints clean`` does not call it."""
    folds = np.array([_fold(s.group, k, seed) for s in ds.samples])
    out = np.full((len(ds), ds.scheme.num_points, 2), np.nan)
    for f in range(k):
        test = np.flatnonzero(folds == f)
        if not len(test):
            continue
        predictor = make_predictor(ds.subset(np.flatnonzero(folds != f), name=f"{ds.name} (fold {f} out)"))
        pred, _ = model_predictions(ds.subset(test), predictor, refine=refine, progress=progress,
                                    start_boxes=None if start_boxes is None else start_boxes[test])
        out[test] = pred
    return out


# --------------------------------------------------------------------------- scoring


class _Checks:
    """Per-check score arrays and the raw values their reasons quote."""

    def __init__(self, n: int):
        self.n = n
        self.z: dict[str, np.ndarray] = {}
        self.text: dict[str, Callable[[int], str]] = {}

    def add(self, name: str, z, text: Callable[[int], str]) -> None:
        z = np.asarray(z, dtype=np.float64)
        self.z[name] = np.where(np.isfinite(z), z, 0.0)
        self.text[name] = text


def _image_sizes(ds: Dataset) -> tuple[np.ndarray, list[str | None]]:
    from facepoints.data.images import ImageError, image_size

    sizes = np.full((len(ds), 2), np.nan)
    errors: list[str | None] = [None] * len(ds)
    for i, s in enumerate(ds.samples):
        try:
            sizes[i] = image_size(s.image)
        except ImageError as e:
            errors[i] = str(e)
    return sizes, errors


def _suspicious_points(pairs: set, expected: dict) -> set:
    """Points of coinciding pairs that make an error: a cluster at one spot holding
    2 points that the shape model's reconstruction of this face puts apart (by more
    than a third of the face's RMS radius), or 5 or more points. Points that do touch
    in real faces (the lids of a closed eye; the inner and outer lips of a closed
    mouth, up to 4 of them; the far side of a face in profile) are close in the
    reconstruction too."""
    parent: dict[int, int] = {}

    def root(a):
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for a, b in pairs:
        parent[root(a)] = root(b)
    clusters: dict[int, set] = {}
    for a in list(parent):
        clusters.setdefault(root(a), set()).add(a)
    out = set()
    for c in clusters.values():
        if len(c) >= 5 or any(expected.get(p, 0.0) > 1 / 3 for p in pairs if p[0] in c):
            out |= c
    return out


def _coinciding(points: np.ndarray, tol: float) -> set:
    from scipy.spatial import cKDTree

    return {(int(a), int(b)) for a, b in cKDTree(points).query_pairs(tol)}


def score_dataset(ds: Dataset, predictor=None, predictions: np.ndarray | None = None, *,
                  threshold: float = DEFAULT_THRESHOLD, margin: float = 0.1, shape_modes: int | None = None,
                  refine: int = 2, model_name: str | None = None, progress: bool = False,
                  detections: np.ndarray | None = None) -> CleanReport:
    """Score and rank every sample of ``ds`` (see the module docstring).

    ``predictor``: a :class:`~facepoints.inference.predictor.Predictor` for the model
    checks (``None``: heuristics only, unless ``predictions`` (S, N, 2) are given).
    ``margin``: how far outside the image (fraction of its width/height) a point may
    lie before ``outside_image`` fires. ``detections`` (S, 4), from
    :func:`matched_detections`: a face detector's box per sample, which starts the
    model's crops and adds the ``detector_scale`` and ``detector_shift`` checks."""
    S = len(ds)
    scheme = ds.scheme
    n = scheme.num_points
    L = np.stack([np.asarray(s.landmarks, np.float64) for s in ds.samples]) if S else np.zeros((0, n, 2))
    checks = _Checks(S)
    hard: dict[str, np.ndarray] = {}
    hard_text: dict[str, Callable[[int], str]] = {}
    warnings = list(ds.warnings)

    finite = np.isfinite(L).all(axis=(1, 2))
    n_bad = (~np.isfinite(L).all(-1)).sum(-1)
    hard["nonfinite"] = ~finite
    hard_text["nonfinite"] = lambda i: f"nonfinite: {n_bad[i]} point(s) are NaN or infinite"

    sizes, size_err = _image_sizes(ds)
    unreadable = np.array([e is not None for e in size_err], bool)
    hard["unreadable"] = unreadable
    hard_text["unreadable"] = lambda i: f"unreadable: {size_err[i]}"

    with np.errstate(invalid="ignore"):
        lo = -margin * sizes[:, None, :]
        hi = (1 + margin) * sizes[:, None, :] - 1
        out_pts = ((L < lo) | (L > hi)).any(-1)  # (S, N); False where the size is unknown
    n_out = out_pts.sum(-1)
    hard["outside_image"] = finite & (n_out > 0)
    hard_text["outside_image"] = lambda i: (
        f"outside_image: {n_out[i]} point(s) lie outside the {int(sizes[i, 0])}x{int(sizes[i, 1])} image "
        f"by more than {margin:g} of its size")

    # size of each face: sqrt(w * h) of its tight landmark box
    safe = np.where(np.isfinite(L), L, 0.0)
    wh = safe.max(1) - safe.min(1)
    face = np.sqrt(np.maximum(wh[:, 0], 0) * np.maximum(wh[:, 1], 0))
    centred = safe - safe.mean(1, keepdims=True)
    sv = np.linalg.svd(centred, compute_uv=False) if S else np.zeros((0, 2))  # (S, 2)
    flatness = sv[:, 1] / np.maximum(sv[:, 0], 1e-12)
    distinct = np.array([len(np.unique(np.round(p, 3), axis=0)) for p in safe])
    collapsed = finite & ((wh.max(1) < 2.0) | (distinct < min(3, n)) | ((flatness < 0.02) & (n >= 3)))
    hard["collapsed"] = collapsed
    hard_text["collapsed"] = lambda i: (
        f"collapsed: the points span {wh[i, 0]:.1f}x{wh[i, 1]:.1f} px, {distinct[i]} distinct position(s), "
        f"thickness {flatness[i]:.3f} of their length")

    usable = finite & ~collapsed
    idx = np.flatnonzero(usable)

    if len(idx) >= 5 and n >= 3:
        _shape_checks(checks, L, idx, face, sizes, scheme, shape_modes, ds)

    has_box = np.array([s.box is not None for s in ds.samples], bool) & usable
    if has_box.sum() >= 5:
        _box_checks(checks, ds, L, has_box, face)

    if detections is not None:
        found = usable & np.isfinite(detections).all(1)
        if found.sum() >= 5:
            _detector_checks(checks, L, detections, found, face)

    model = None
    if predictions is None and predictor is not None:
        predictions, errs = model_predictions(ds, predictor, refine=refine, usable=usable & ~unreadable,
                                              progress=progress, start_boxes=detections)
        warnings.extend(errs)
    if predictions is not None:
        model = model_name or "given predictions"
        P = np.asarray(predictions, np.float64)
        if P.shape != L.shape:
            raise ValueError(f"predictions have shape {P.shape}, the dataset's labels {L.shape}")
        ok = usable & np.isfinite(P).all(axis=(1, 2))
        if ok.sum() >= 5:
            _model_checks(checks, L, P, ok, face, scheme)

    ranked = _combine(ds, checks, hard, hard_text, threshold,
                      P if predictions is not None else None)
    return CleanReport(ds.name, scheme.name, threshold, model, ranked, warnings)


def _shape_checks(checks: _Checks, L, idx, face, sizes, scheme, shape_modes, ds) -> None:
    S = len(L)
    Z = _complex(L[idx])
    model = ShapeModel(Z, modes=shape_modes)
    res, recon = model.fit(Z)  # (k, N), unit-size shapes (RMS radius 1)

    def full(v):
        out = np.full(S, np.nan)
        out[idx] = v
        return out

    total = full(np.sqrt((res ** 2).mean(-1)))
    checks.add("shape", robust_z(total, floor=0.005),
               lambda i: f"shape: unusual shape after Procrustes alignment to the shape model "
                         f"(RMS residual {total[i]:.3f} of the face radius)")
    for g, members in scheme.groups.items():
        m = list(members)
        v = full(res[:, m].mean(-1))
        checks.add(f"shape[{g}]", robust_z(v, floor=0.005),
                   lambda i, v=v, g=g: f"shape[{g}]: unusual {g.replace('_', ' ')} after Procrustes alignment "
                                       f"to the shape model (residual {v[i]:.3f} of the face radius)")

    if scheme.has_flip and scheme.flip_pairs:
        perm = scheme.flip_permutation
        swapped = np.sqrt((model.residual(Z[:, perm]) ** 2).mean(-1))
        ratio = full(np.log(np.sqrt((res ** 2).mean(-1)) / np.maximum(swapped, 1e-12)))
        z = robust_z(ratio, floor=0.05)
        # only a better fit with left and right exchanged is a swap
        z = np.where(ratio > 0, z, np.minimum(z, 0))
        checks.add("swapped_lr", z,
                   lambda i: f"swapped_lr: left and right look exchanged: with the labels re-indexed "
                             f"through the flip table the shape fits {np.exp(ratio[i]):.1f}x better")

    w = L[:, :, 0].max(1) - L[:, :, 0].min(1)
    h = L[:, :, 1].max(1) - L[:, :, 1].min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = full(np.log(w[idx] / h[idx]))
        rel = np.log(face / np.sqrt(sizes[:, 0] * sizes[:, 1]))
    rel = np.where(np.isfinite(aspect), rel, np.nan)
    checks.add("aspect", robust_z(aspect, floor=0.1, two_sided=True),
               lambda i: f"aspect: the landmark box is {np.exp(aspect[i]):.2f} times as wide as high, "
                         f"unusual in this dataset")
    checks.add("size", robust_z(rel, floor=0.25, two_sided=True),
               lambda i: f"size: the face is {np.exp(rel[i]):.3f} of the image size, unusual in this dataset")

    # several points at one spot, where the shape model says they should be apart
    pairs = [_coinciding(L[i], max(1e-3 * face[i], 1e-3)) for i in idx]
    dup = np.zeros(S)
    for k, (i, ps) in enumerate(zip(idx, pairs)):
        if ps:
            expected = {(a, b): float(np.abs(recon[k, a] - recon[k, b])) for a, b in ps}
            dup[i] = len(_suspicious_points(ps, expected))
    # 2 points: as far out as the threshold; each more point adds 1
    checks.add("duplicates", np.where(dup >= 2, DEFAULT_THRESHOLD + dup - 2, 0.0),
               lambda i: f"duplicates: {int(dup[i])} points sit on top of other points the shape model puts "
                         f"apart")


def _box_checks(checks: _Checks, ds, L, has_box, face) -> None:
    S = len(L)
    feats = np.full((S, 3), np.nan)
    for i in np.flatnonzero(has_box):
        b = np.asarray(ds.samples[i].box, np.float64)
        lb = landmark_box(L[i].astype(np.float32)).astype(np.float64)
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw <= 0 or bh <= 0 or face[i] <= 0:
            feats[i] = [np.inf, np.inf, np.inf]
            continue
        feats[i, 0] = ((b[0] + b[2]) - (lb[0] + lb[2])) / 2 / face[i]
        feats[i, 1] = ((b[1] + b[3]) - (lb[1] + lb[3])) / 2 / face[i]
        feats[i, 2] = np.log(np.sqrt(bw * bh) / face[i])
    z = np.stack([robust_z(np.where(np.isfinite(f), f, np.nan), floor=0.02, two_sided=True)
                  for f in feats.T], axis=1)
    z = np.where(np.isinf(feats), 1e3, z)
    zmax = np.nanmax(np.where(np.isnan(z), -np.inf, z), axis=1)
    checks.add("box_mismatch", np.where(has_box, zmax, 0.0),
               lambda i: f"box_mismatch: the annotated box is off the landmarks (centre offset "
                         f"{feats[i, 0]:+.2f}, {feats[i, 1]:+.2f} and size {np.exp(feats[i, 2]):.2f} "
                         f"of the landmark box size)")


def _detector_checks(checks: _Checks, L, D, found, face) -> None:
    """The labels' tight box against a face detector's (landmark-convention) box for
    the same face: size ratio and centre offset, robust z over the dataset. The
    detector never saw the labels, so a scaled or displaced shape shows here even when
    a model started from the labels would follow it."""
    lb = np.stack([landmark_box(np.where(np.isfinite(p), p, 0).astype(np.float32)) for p in L]).astype(np.float64)
    dsz = np.sqrt(np.clip(D[:, 2] - D[:, 0], 0, None) * np.clip(D[:, 3] - D[:, 1], 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(found, np.log(face / dsz), np.nan)
        c = (lb[:, :2] + lb[:, 2:]) / 2 - (D[:, :2] + D[:, 2:]) / 2
        shift = np.where(found, np.hypot(c[:, 0], c[:, 1]) / dsz, np.nan)
    checks.add("detector_scale", robust_z(scale, floor=0.02, two_sided=True),
               lambda i: f"detector_scale: the labels are {np.exp(scale[i]):.2f}x the size of the face detector's box")
    checks.add("detector_shift", robust_z(shift, floor=0.02),
               lambda i: f"detector_shift: the labels' centre is {shift[i]:.2f} face sizes from the face detector's")


def _fit_similarity(zl, zp, w):
    """Weighted least-squares similarity taking predictions ``zp`` onto labels ``zl``
    (complex, (S, N)); ``w`` (N,) point weights. Returns both weighted centroids, the
    complex factor and the centred shapes."""
    w = w / w.sum()
    cl, cp = zl @ w, zp @ w
    zl0, zp0 = zl - cl[:, None], zp - cp[:, None]
    a = (np.conj(zp0) * zl0) @ w / np.maximum((np.abs(zp0) ** 2) @ w, 1e-12)
    return cl, cp, a, zl0, zp0


def _model_checks(checks: _Checks, L, P, ok, face, scheme) -> None:
    S = len(L)
    idx = np.flatnonzero(ok)
    zl, zp = _complex(L[idx]), _complex(P[idx])
    d = face[idx]
    n = zl.shape[1]
    # Points the model places less reliably (the jaw) count less in the similarity
    # fit: weight each point by 1 / its typical residual squared, from a first fit.
    w = np.ones(n)
    for _ in range(2):
        cl, cp, a, zl0, zp0 = _fit_similarity(zl, zp, w)
        r = (zl0 - a[:, None] * zp0) / d[:, None]  # (k, N)
        # A model's systematic bias (e.g. every jaw a little low) is no label error:
        # take the dataset's median disagreement off before measuring.
        r = r - _cmedian(r, axis=0)
        sigma = np.maximum(np.median(np.abs(r), axis=0), 1e-4)
        w = 1 / sigma ** 2

    def full(v):
        out = np.full(S, np.nan)
        out[idx] = v
        return out

    t = (cl - cp) / d
    shift = full(np.abs(t - _cmedian(t)))
    scale = full(np.log(np.abs(a)))
    angle = full(np.degrees(np.angle(a)))
    local = np.abs(r)
    err = full((np.abs(zl - zp) / d[:, None]).mean(-1))
    checks.add("model_shift", robust_z(shift, floor=0.005),
               lambda i: f"model_shift: the labels sit {shift[i]:.2f} face sizes from the model's landmarks")
    checks.add("model_scale", robust_z(scale, floor=0.01, two_sided=True),
               lambda i: f"model_scale: the labels are {np.exp(scale[i]):.2f}x the size of the model's landmarks")
    checks.add("model_rotation", robust_z(angle, floor=0.5, two_sided=True),
               lambda i: f"model_rotation: the labels are turned {angle[i]:+.0f} deg from the model's landmarks")
    loc = full(local.mean(-1))
    checks.add("model_local", robust_z(loc, floor=0.003),
               lambda i: f"model_local: the labels' shape differs from the model's landmarks by "
                         f"{loc[i]:.3f} of the face size per point (model error {err[i]:.3f})")
    for g, members in scheme.groups.items():
        v = full(local[:, list(members)].mean(-1))
        checks.add(f"model_local[{g}]", robust_z(v, floor=0.003),
                   lambda i, v=v, g=g: f"model_local[{g}]: the {g.replace('_', ' ')} labels are {v[i]:.3f} of the "
                                       f"face size per point from the model's")


_DIAGNOSES = ("swapped_lr", "duplicates")


def _combine(ds: Dataset, checks: _Checks, hard, hard_text, threshold: float, P) -> list[SampleScore]:
    S = len(ds)
    names = sorted(checks.z)
    Z = np.stack([checks.z[k] for k in names], axis=1) if names else np.zeros((S, 0))
    out = []
    for i, s in enumerate(ds.samples):
        scored = {k: float(Z[i, j]) for j, k in enumerate(names)}
        reasons = [hard_text[k](i) for k in hard if hard[k][i]]
        score = HARD + len(reasons) if reasons else 0.0
        for k in hard:
            scored[k] = HARD if hard[k][i] else 0.0
        # a diagnosis (left/right exchanged) first: it explains the shape residual
        order = sorted(names, key=lambda k: (k not in _DIAGNOSES, -scored[k]))
        if not reasons:
            score = max([scored[k] for k in names] + [0.0])
        for k in order:
            if scored[k] >= threshold:
                reasons.append(f"{checks.text[k](i)} (z {scored[k]:.1f})")
        flagged = score >= threshold
        pred = None if P is None or not np.isfinite(P[i]).all() else P[i]
        out.append(SampleScore(i, s.id, float(score), reasons, scored, flagged, pred))
    out.sort(key=lambda r: (-r.score, r.id))
    return out


# --------------------------------------------------------------------------- reports


def write_report(report: CleanReport, ds: Dataset, folder: str | Path, max_thumbnails: int = 200,
                 thumb_size: int = 192) -> dict[str, Path]:
    """``report.csv`` (every sample, ranked, with each check's score), ``report.json``
    (``to_json(all_samples=True)``; its ``flagged`` list is what ``data.exclude`` of a
    training config reads) and ``report.html`` (the flagged samples, at least the top
    20, at most ``max_thumbnails``, as thumbnails with the labels drawn, PNG embedded)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted({k for r in report.ranked for k in r.checks})
    paths = {"csv": folder / "report.csv", "json": folder / "report.json", "html": folder / "report.html"}
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "id", "score", "flagged", "reasons", "image"] + names)
        for rank, r in enumerate(report.ranked, 1):
            w.writerow([rank, r.id, f"{r.score:.3f}", int(r.flagged), " | ".join(r.reasons),
                        str(ds.samples[r.index].image)] + [f"{r.checks.get(k, 0.0):.2f}" for k in names])
    paths["json"].write_text(json.dumps(report.to_json(all_samples=True), indent=1))
    shown = [r for r in report.ranked if r.flagged]
    if len(shown) < 20:
        shown = report.ranked[:20]
    shown = shown[:max_thumbnails]
    rows = []
    for rank, r in enumerate(shown, 1):
        s = ds.samples[r.index]
        png = _thumbnail_png(s, r.prediction, ds.scheme, thumb_size)
        img = (f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
               f'width="{thumb_size}" height="{thumb_size}">' if png else "<i>no image</i>")
        reasons = "".join(f"<li>{html.escape(t)}</li>" for t in r.reasons) or "<li>(below the threshold)</li>"
        rows.append(f"<tr class=\"{'flag' if r.flagged else ''}\"><td>{rank}</td><td>{img}</td>"
                    f"<td><b>{html.escape(r.id)}</b><br>score {r.score:.1f}<br>"
                    f"<small>{html.escape(str(s.image))}</small><ul>{reasons}</ul></td></tr>")
    head = (f"<h1>facepoints clean: {html.escape(report.dataset)}</h1>"
            f"<p>{report.n} samples, scheme {html.escape(report.scheme)}, "
            f"{len(report.flagged)} flagged (score &ge; {report.threshold:g}); model: "
            f"{html.escape(report.model or 'none (heuristics only)')}. Labels: subject's right red, left blue, "
            f"midline green, consecutive points of a group joined; the model's landmarks are yellow crosses.</p>")
    warn = "".join(f"<p class=warn>{html.escape(w)}</p>" for w in report.warnings)
    style = ("body{font-family:sans-serif;margin:1em}td{vertical-align:top;padding:4px;border-bottom:1px solid #ddd}"
             "tr.flag td:first-child{color:#c00;font-weight:bold}ul{margin:4px 0;padding-left:1.2em}"
             ".warn{color:#a60}")
    paths["html"].write_text(f"<!doctype html><html><head><meta charset=utf-8><title>facepoints clean</title>"
                             f"<style>{style}</style></head><body>{head}{warn}<table>{''.join(rows)}</table>"
                             f"</body></html>")
    return paths


def _thumbnail_png(sample, prediction, scheme, size: int) -> bytes | None:
    import cv2

    from facepoints.data.crops import crop_matrix, transform_points, warp
    from facepoints.data.images import ImageError, read_image
    from facepoints.data.draw import YELLOW, side_colours

    try:
        img = read_image(sample.image)
    except ImageError:
        return None
    h, w = img.shape[:2]
    pts = np.asarray(sample.landmarks, np.float64)
    fin = np.isfinite(pts).all(1)
    both = [pts[fin]] + ([prediction] if prediction is not None else [])
    allp = np.concatenate(both) if fin.any() else np.zeros((0, 2))
    if len(allp):
        x0, y0 = allp.min(0)
        x1, y1 = allp.max(0)
        side = max(x1 - x0, y1 - y0, 16.0) * 1.4
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if not len(allp) or side > 3 * max(w, h):
        cx, cy, side = (w - 1) / 2, (h - 1) / 2, float(max(w, h))
    m = crop_matrix(cx, cy, side, size)
    tile = warp(img, m, size)
    colours = side_colours(scheme, len(pts))
    p = transform_points(np.where(fin[:, None], pts, 0), m).astype(np.float64)
    for members in scheme.groups.values():
        ok = [j for j in members if fin[j]]
        if len(ok) > 1:
            cv2.polylines(tile, [np.round(p[ok]).astype(np.int32)], False, (200, 200, 200), 1, cv2.LINE_AA)
    for j in np.flatnonzero(fin):
        cv2.circle(tile, (int(round(p[j, 0])), int(round(p[j, 1]))), 2, colours[j], -1, cv2.LINE_AA)
    if prediction is not None:
        for x, y in transform_points(prediction, m):
            cv2.drawMarker(tile, (int(round(x)), int(round(y))), YELLOW, cv2.MARKER_CROSS, 5, 1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    return buf.tobytes() if ok else None
