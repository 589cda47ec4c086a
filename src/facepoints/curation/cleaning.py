"""Finding bad annotations: score every sample of a dataset, say why, rank.

Each check gives every sample a score in units of a *robust z-score*: distance from
the dataset's median in units of 1.4826 x MAD (the standard deviation a Gaussian
would have), widened for checks that are heavy-tailed on good data (see
:func:`robust_z`), so checks on different quantities can be compared. A sample's
score is the largest of its checks' scores; it is *flagged* when that is at least
``threshold`` (``DEFAULT_THRESHOLD`` = 5). For a Gaussian quantity 5 would be one
good sample in several million; real checks have heavier tails, and 5 was chosen on
a development draw of the corrupted 300-W/YTF copies of ``lab/cleaning/cleaning.py``
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

from typing import Callable

import numpy as np

from facepoints.curation.clean_pass import (ImagePass, image_pass, match_detection,  # noqa: F401 (public API)
                                            matched_detections, model_predictions, out_of_fold_predictions)
from facepoints.curation.clean_report import CleanReport, SampleScore, write_report  # noqa: F401 (public API)
from facepoints.curation.clean_stats import (INLIER_FRACTION, ShapeModel, as_complex, coinciding_pairs,  # noqa: F401
                                             complex_median, robust_z, suspicious_points)
from facepoints.data.samples import Dataset, landmark_box

# A sample that fails a hard check gets this score: above any sensible threshold.
HARD = 100.0
# Flag a sample when one of its checks is this many robust standard deviations out
# (see the module docstring for how it was chosen).
DEFAULT_THRESHOLD = 5.0


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


def score_dataset(ds: Dataset, predictor=None, predictions: np.ndarray | None = None, *,
                  threshold: float = DEFAULT_THRESHOLD, margin: float = 0.1, shape_modes: int | None = None,
                  refine: int = 2, model_name: str | None = None, progress: bool = False,
                  detections: np.ndarray | None = None, detector=None) -> CleanReport:
    """Score and rank every sample of ``ds`` (see the module docstring).

    ``predictor``: a :class:`~facepoints.inference.predictor.Predictor` for the model
    checks (``None``: heuristics only, unless ``predictions`` (S, N, 2) are given).
    ``margin``: how far outside the image (fraction of its width/height) a point may
    lie before ``outside_image`` fires. ``detector`` (or ``detections`` (S, 4) found
    before, :func:`matched_detections`): a face detector's box per sample, which starts
    the model's crops and adds the ``detector_scale`` and ``detector_shift`` checks.
    The images are decoded once for all of it (:func:`image_pass`)."""
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

    # size of each face: sqrt(w * h) of its tight landmark box
    safe = np.where(np.isfinite(L), L, 0.0)
    wh = safe.max(1) - safe.min(1)
    face = np.sqrt(np.maximum(wh[:, 0], 0) * np.maximum(wh[:, 1], 0))
    centred = safe - safe.mean(1, keepdims=True)
    sv = np.linalg.svd(centred, compute_uv=False) if S else np.zeros((0, 2))  # (S, 2)
    flatness = sv[:, 1] / np.maximum(sv[:, 0], 1e-12)
    distinct = np.array([len(np.unique(np.round(p, 3), axis=0)) for p in safe])
    collapsed = finite & ((wh.max(1) < 2.0) | (distinct < min(3, n)) | ((flatness < 0.02) & (n >= 3)))
    usable = finite & ~collapsed

    run_model = predictor if predictions is None else None
    seen = image_pass(ds, run_model, detector if detections is None else None, refine=refine, usable=usable,
                      progress=progress, start_boxes=detections)
    sizes, size_err = seen.sizes, seen.errors
    detections = detections if detections is not None else seen.detections
    radii = None
    if run_model is not None:
        predictions, radii = seen.predictions, seen.radii
        warnings.extend(e for k, e in enumerate(size_err) if e and usable[k])
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
    hard["collapsed"] = collapsed
    hard_text["collapsed"] = lambda i: (
        f"collapsed: the points span {wh[i, 0]:.1f}x{wh[i, 1]:.1f} px, {distinct[i]} distinct position(s), "
        f"thickness {flatness[i]:.3f} of their length")

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
    if predictions is not None:
        model = model_name or "given predictions"
        P = np.asarray(predictions, np.float64)
        if P.shape != L.shape:
            raise ValueError(f"predictions have shape {P.shape}, the dataset's labels {L.shape}")
        ok = usable & np.isfinite(P).all(axis=(1, 2))
        if ok.sum() >= 5:
            _model_checks(checks, L, P, ok, face, scheme, radii)

    ranked = _combine(ds, checks, hard, hard_text, threshold,
                      P if predictions is not None else None)
    return CleanReport(ds.name, scheme.name, threshold, model, ranked, warnings)


def _shape_checks(checks: _Checks, L, idx, face, sizes, scheme, shape_modes, ds) -> None:
    S = len(L)
    Z = as_complex(L[idx])
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
    pairs = [coinciding_pairs(L[i], max(1e-3 * face[i], 1e-3)) for i in idx]
    dup = np.zeros(S)
    for k, (i, ps) in enumerate(zip(idx, pairs)):
        if ps:
            expected = {(a, b): float(np.abs(recon[k, a] - recon[k, b])) for a, b in ps}
            dup[i] = len(suspicious_points(ps, expected))
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


def _model_checks(checks: _Checks, L, P, ok, face, scheme, radii=None) -> None:
    S = len(L)
    idx = np.flatnonzero(ok)
    zl, zp = as_complex(L[idx]), as_complex(P[idx])
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
        r = r - complex_median(r, axis=0)
        sigma = np.maximum(np.median(np.abs(r), axis=0), 1e-4)
        w = 1 / sigma ** 2

    def full(v):
        out = np.full(S, np.nan)
        out[idx] = v
        return out

    t = (cl - cp) / d
    shift = full(np.abs(t - complex_median(t)))
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
    if radii is not None:
        # the model's own uncertainty: how many of its 90 % error radii each label lies from
        # its point (a hard face's labels may be far from the model's points, and it says so)
        k = np.abs(zl - zp) / np.maximum(np.asarray(radii, np.float64)[idx], 1e-6)
        beyond = full(np.nanmean(k, axis=-1))
        checks.add("model_trust", robust_z(beyond, floor=0.1),
                   lambda i: f"model_trust: the labels lie {beyond[i]:.1f} of the model's own 90 % error radius "
                             "per point from its landmarks")
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


