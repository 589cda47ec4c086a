"""Landmark accuracy metrics as face-alignment papers report them.

Conventions
-----------
* Landmarks are arrays of shape ``(M, N, 2)``: M samples, N points, (x, y) in pixels.
  A single face ``(N, 2)`` is accepted and treated as ``M = 1``.
* ``nme`` returns per-sample errors as *fractions* of the normalising distance
  (0.05 means 5 %). ``failure_rate`` and ``auc`` take such fractions.
* ``summary`` converts to the units papers print: NME and failure rate in percent,
  AUC as a fraction in [0, 1].

Normalisers (``kind``):

``"io"``
    inter-ocular: distance between the two outer eye corners
    (``scheme.outer_eye_corners``), the 300-W / WFLW convention.
``"ip"``
    inter-pupil: distance between the pupil centres, each the mean of
    ``scheme.pupils[side]`` (the COFW convention).
``"box"``
    ``sqrt(w * h)`` of the tight box around the ground-truth landmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from facepoints.schemes import LandmarkScheme, SchemeError, get_scheme

KINDS = ("io", "ip", "box")


def _as_batch(a, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (M, N, 2) or (N, 2), got {np.shape(a)}")
    return arr


def _check_points(arr: np.ndarray, scheme: LandmarkScheme, name: str) -> None:
    if arr.shape[1] != scheme.num_points:
        raise ValueError(
            f"{name} has {arr.shape[1]} points per face, scheme {scheme.name!r} has {scheme.num_points}"
        )


def has_normaliser(scheme: LandmarkScheme | str, kind: str) -> bool:
    """Whether ``scheme`` defines what normaliser ``kind`` needs."""
    scheme = get_scheme(scheme)
    if kind == "io":
        return scheme.outer_eye_corners is not None
    if kind == "ip":
        return scheme.pupils is not None
    if kind == "box":
        return True
    raise ValueError(f"unknown normaliser kind {kind!r}; expected one of {', '.join(KINDS)}")


def normaliser(gt, scheme: LandmarkScheme | str, kind: str = "io") -> np.ndarray:
    """Per-sample normalising distance, shape ``(M,)``, in the units of ``gt``.

    Raises ``SchemeError`` (a ``ValueError``) if the scheme lacks the points ``kind``
    needs, and ``ValueError`` if some sample's distance is zero or not finite
    (the error would be meaningless)."""
    scheme = get_scheme(scheme)
    g = _as_batch(gt, "gt")
    _check_points(g, scheme, "gt")
    if not has_normaliser(scheme, kind):
        what = {"io": "outer_eye_corners", "ip": "pupils"}[kind]
        raise SchemeError(
            f"normaliser {kind!r} needs {what}, which scheme {scheme.name!r} does not define; "
            f"use kind='box' or add {what} to the scheme"
        )
    if kind == "io":
        a, b = scheme.outer_eye_corners
        d = np.linalg.norm(g[:, a] - g[:, b], axis=-1)
    elif kind == "ip":
        left = g[:, list(scheme.pupils[0])].mean(axis=1)
        right = g[:, list(scheme.pupils[1])].mean(axis=1)
        d = np.linalg.norm(left - right, axis=-1)
    else:
        wh = g.max(axis=1) - g.min(axis=1)
        d = np.sqrt(wh[:, 0] * wh[:, 1])
    bad = np.flatnonzero(~(np.isfinite(d) & (d > 0)))
    if bad.size:
        raise ValueError(
            f"normaliser {kind!r} is zero or not finite for sample(s) {bad[:10].tolist()}"
            + (" ..." if bad.size > 10 else "")
        )
    return d


def point_errors(pred, gt) -> np.ndarray:
    """Euclidean error of every point, shape ``(M, N)``, in pixels."""
    p, g = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {p.shape} and gt {g.shape} differ in shape")
    return np.linalg.norm(p - g, axis=-1)


def nme(pred, gt, scheme: LandmarkScheme | str, kind: str = "io") -> np.ndarray:
    """Per-sample normalised mean error, shape ``(M,)``, as a fraction (not percent):
    the mean point-to-point distance divided by ``normaliser(gt, scheme, kind)``."""
    scheme = get_scheme(scheme)
    err = point_errors(pred, gt)
    return err.mean(axis=1) / normaliser(gt, scheme, kind)


def _errors_1d(errors) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("no errors given")
    return e


def failure_rate(errors, threshold: float = 0.1) -> float:
    """Fraction (0..1) of samples whose error is above ``threshold``; an error equal
    to the threshold is not a failure. NaN errors count as failures."""
    e = _errors_1d(errors)
    return float(np.mean(~(e <= threshold)))


def ced(errors, threshold: float = 0.1, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative error distribution: ``xs`` from 0 to ``threshold`` in ``step``
    increments and the proportion of samples with error ``<= x`` at each."""
    if threshold <= 0 or step <= 0:
        raise ValueError("threshold and step must be positive")
    e = np.sort(_errors_1d(errors))  # NaN sorts last and is never <= x
    n = max(1, int(round(threshold / step)))
    xs = np.linspace(0.0, threshold, n + 1)
    ys = np.searchsorted(e, xs, side="right") / e.size
    return xs, ys


def auc(errors, threshold: float = 0.1, step: float = 1e-4) -> float:
    """Area under the CED curve up to ``threshold``, divided by ``threshold``: a
    fraction in [0, 1] (the 300-W definition; 1 means every error is 0). Integrated
    with the trapezoid rule on a grid of ``step``, so it is within about ``step /
    threshold`` of the exact value ``mean(max(threshold - e, 0)) / threshold``."""
    xs, ys = ced(errors, threshold, step)
    return float(np.trapezoid(ys, xs) / threshold)


def summary(pred, gt, scheme: LandmarkScheme | str, threshold: float = 0.1,
            groups: bool = True) -> dict:
    """The usual table row for predictions ``pred`` against ``gt`` (both (M, N, 2)).

    Returns a dict with

    * ``n``: number of samples;
    * ``nme_io``, ``nme_ip``, ``nme_box``: mean NME in **percent** (x 100), or
      ``None`` where the scheme lacks that normaliser (e.g. contest971 has no
      outer eye corners);
    * ``primary``: the normaliser used for failure rate, AUC and groups: ``"io"``
      if the scheme has it, else ``"ip"``, else ``"box"``;
    * ``fr10``: failure rate at ``threshold`` (default 0.1) in **percent**;
    * ``auc10``: CED AUC up to ``threshold`` as a **fraction** in [0, 1];
    * ``nme_groups`` (if ``groups`` and the scheme has groups): per-group mean NME
      in percent, with the primary normaliser.
    """
    scheme = get_scheme(scheme)
    p, g = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    _check_points(g, scheme, "gt")
    err = point_errors(p, g)
    out: dict = {"n": int(g.shape[0])}
    per_kind: dict[str, np.ndarray] = {}
    for kind in KINDS:
        if has_normaliser(scheme, kind):
            per_kind[kind] = err.mean(axis=1) / normaliser(g, scheme, kind)
            out[f"nme_{kind}"] = float(per_kind[kind].mean() * 100)
        else:
            out[f"nme_{kind}"] = None
    primary = next(k for k in KINDS if k in per_kind)
    out["primary"] = primary
    out["fr10"] = failure_rate(per_kind[primary], threshold) * 100
    out["auc10"] = auc(per_kind[primary], threshold)
    if groups and scheme.groups:
        norm = normaliser(g, scheme, primary)
        out["nme_groups"] = {
            name: float((err[:, list(idx)].mean(axis=1) / norm).mean() * 100)
            for name, idx in scheme.groups.items()
        }
    return out


# AFLW2000-3D's |yaw| buckets (degrees): [0, 30), [30, 60), [60, 90] (beyond 90 counts in the last)
POSE_BUCKETS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def pose_protocol(errors_box: np.ndarray, yaws: np.ndarray) -> dict:
    """The AFLW2000-3D protocol from per-face NME by the landmark box (``nme(...,
    "box")``, fractions) and yaws in degrees: mean NME in percent per |yaw| bucket
    (``"0-30"``, ``"30-60"``, ``"60-90"``), faces per bucket (``"n 0-30"``...) and
    ``"balanced"``, the mean of the bucket means (the published figure). Buckets without
    faces are left out, and so is ``balanced`` then."""
    e = _errors_1d(errors_box)
    a = np.abs(np.asarray(yaws, np.float64))
    if len(a) != len(e):
        raise ValueError(f"{len(e)} errors but {len(a)} yaws")
    out: dict = {}
    means = []
    for i, (lo, hi) in enumerate(POSE_BUCKETS):
        last = i == len(POSE_BUCKETS) - 1
        sel = (a >= lo) & ((a < hi) | last) & np.isfinite(e)
        name = f"{lo:.0f}-{hi:.0f}"
        out[f"n {name}"] = int(sel.sum())
        if sel.any():
            out[name] = float(e[sel].mean() * 100)
            means.append(out[name])
    if len(means) == len(POSE_BUCKETS):
        out["balanced"] = float(np.mean(means))
    return out


def plot_ced(curves: Mapping[str, np.ndarray], path, threshold: float = 0.1,
             title: str | None = None, inputs=()) -> Path:
    """Write a PNG with the CED curves of several methods on one plot.

    ``curves`` maps a method name to its per-sample errors as fractions (what
    ``nme`` returns). The x axis is in percent; the legend gives each method's
    mean NME (percent) and AUC up to ``threshold``. Rendered with the Agg backend
    directly (no pyplot, no change to the global matplotlib backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, errors in curves.items():
        e = _errors_1d(errors)
        xs, ys = ced(e, threshold)
        label = f"{name}: NME {np.nanmean(e) * 100:.2f}%, AUC {auc(e, threshold):.4f}"
        ax.plot(xs * 100, ys, label=label)
    ax.set_xlim(0, threshold * 100)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("Proportion of images")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    import io

    from facepoints.data.outputs import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_bytes(path, buf.getvalue(), inputs)  # never onto an input (a dataset image)
