"""Head pose (yaw, pitch, roll) from 2-D landmarks, pose statistics of a dataset, and
oversampling of rare yaws for training (``data.balance`` in the training config).

The pose is the rotation that best maps a generic 3-D face onto the annotated points
(``cv2.solvePnP``; pinhole camera with focal length = image width, principal point at
the image centre, no distortion). The 3-D face is the 14-point subset of the
anthropometric head model that is commonly used for this (brow corners, eye corners,
nose wings, mouth corners, lower lip, chin), here turned into OpenCV's camera axes
(x right, y down, z away from the camera), so that the identity rotation is a face
looking straight into the camera. It is a rough, generic face: angles are good to a
few degrees on near-frontal faces and to ~10 degrees at large yaw, enough to bucket a
dataset by pose, not to measure a head.

Angles, in degrees, for ``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` (model to camera):

* yaw > 0: the face turns so that the nose points to the image's right (the subject
  turns to their left);
* pitch > 0: the face looks up;
* roll > 0: the face tilts clockwise in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepoints.errors import FacepointsError
from facepoints.schemes import LandmarkScheme

# The 14-point generic face (anthropometric head model units, ~cm), in the model's own
# axes: x to the image's left (the subject's right), y up, z toward the viewer.
_MODEL_14 = np.array([
    [6.825897, 6.760612, 4.402142],     # right brow, outer corner      ibug 17
    [1.330353, 7.122144, 6.903745],     # right brow, inner corner      ibug 21
    [-1.330353, 7.122144, 6.903745],    # left brow, inner corner       ibug 22
    [-6.825897, 6.760612, 4.402142],    # left brow, outer corner       ibug 26
    [5.311432, 5.485328, 3.987654],     # right eye, outer corner       ibug 36
    [1.789930, 5.393625, 4.413414],     # right eye, inner corner       ibug 39
    [-1.789930, 5.393625, 4.413414],    # left eye, inner corner        ibug 42
    [-5.311432, 5.485328, 3.987654],    # left eye, outer corner        ibug 45
    [2.005628, 1.409845, 6.165652],     # nose wing, right              ibug 31
    [-2.005628, 1.409845, 6.165652],    # nose wing, left               ibug 35
    [2.774015, -2.080775, 5.048531],    # mouth corner, right           ibug 48
    [-2.774015, -2.080775, 5.048531],   # mouth corner, left            ibug 54
    [0.000000, -3.116408, 6.097667],    # lower lip, bottom centre      ibug 57
    [0.000000, -7.415691, 4.070434],    # chin                          ibug 8
])
# In OpenCV's camera axes (x right, y down, z forward): every axis turned round.
MODEL_POINTS = -_MODEL_14

# Which landmark of each scheme matches each model point.
POSE_INDICES: dict[str, tuple[int, ...]] = {
    "ibug68": (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8),
    "wflw98": (33, 37, 42, 46, 60, 64, 68, 72, 55, 59, 76, 82, 85, 16),
}

ANGLES = ("yaw", "pitch", "roll")


class PoseError(FacepointsError, ValueError):
    """The pose cannot be estimated (unknown scheme, degenerate points)."""


def pose_indices(scheme: LandmarkScheme | str) -> tuple[int, ...]:
    name = scheme if isinstance(scheme, str) else scheme.name
    n = None if isinstance(scheme, str) else scheme.num_points
    if name in POSE_INDICES:
        return POSE_INDICES[name]
    if n == 68:  # a custom scheme with 68 points: assume the iBUG order
        return POSE_INDICES["ibug68"]
    raise PoseError(f"head pose needs the 68-point iBUG or 98-point WFLW scheme; got {name!r}")


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Model-to-camera rotation for angles in degrees (conventions in the module doc)."""
    y, p, r = (math.radians(v) for v in (-yaw, -pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_matrix(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation made by :func:`rotation_matrix`."""
    r = np.asarray(rot, dtype=np.float64)
    ty = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    tx = math.atan2(r[2, 1], r[2, 2])
    tz = math.atan2(r[1, 0], r[0, 0])
    return -math.degrees(ty), -math.degrees(tx), math.degrees(tz)


def camera_matrix(width: float, height: float) -> np.ndarray:
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)


def project_model(yaw: float, pitch: float, roll: float, width: int = 640, height: int = 480,
                  distance: float = 60.0, centre=None) -> np.ndarray:
    """The 14 model points seen by the camera of a ``width`` x ``height`` image with the
    head at ``distance`` model units, turned by the given angles: ``(14, 2)``. For tests
    and for checking the conventions."""
    import cv2

    rvec, _ = cv2.Rodrigues(rotation_matrix(yaw, pitch, roll))
    cx, cy = centre if centre is not None else (width / 2, height / 2)
    f = float(width)
    tvec = np.array([(cx - width / 2) * distance / f, (cy - height / 2) * distance / f, distance])
    pts, _ = cv2.projectPoints(MODEL_POINTS, rvec, tvec, camera_matrix(width, height), None)
    return pts.reshape(-1, 2)


def estimate_pose(points: np.ndarray, image_size: tuple[int, int] | None = None,
                  scheme: LandmarkScheme | str = "ibug68") -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face from its landmarks ``(N, 2)``.

    ``image_size`` is ``(width, height)``; without it a virtual camera is centred on
    the face with a field of view four faces wide."""
    pts = np.asarray(points, dtype=np.float64)
    idx = pose_indices(scheme)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) <= max(idx):
        raise PoseError(f"expected (N, 2) landmarks of the scheme, got {pts.shape}")
    return _solve_pose(MODEL_POINTS, pts[list(idx)], image_size, fov=4.0)


def _solve_pose(model: np.ndarray, img: np.ndarray, image_size: tuple[int, int] | None,
                fov: float) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of 3-D ``model`` points seen at image points ``img`` by
    ``cv2.solvePnP`` (SQPnP, then Levenberg-Marquardt from it). Without ``image_size`` a virtual
    camera is centred on the points with a field of view ``fov`` times their span."""
    import cv2

    if not np.isfinite(img).all():
        raise PoseError("landmarks are not finite")
    span = float(np.ptp(img, axis=0).max())
    if span <= 1e-6:
        raise PoseError("landmarks are all at one place")
    if image_size is None:
        w = h = fov * span
        img = img - img.mean(0) + [w / 2, h / 2]
    else:
        w, h = image_size
    cam = camera_matrix(w, h)
    ok, rvec, tvec = cv2.solvePnP(model, img, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise PoseError("solvePnP found no pose")
    # Levenberg-Marquardt from there; solvePnP's own stops once converged (on AFLW2000-3D
    # dev within 0.0004 deg of solvePnPRefineLM's 20 iterations, in two thirds of the time)
    ok, rvec, tvec = cv2.solvePnP(model, img, cam, None, rvec, tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise PoseError("solvePnP found no pose")
    return angles_from_matrix(cv2.Rodrigues(rvec)[0])


# Points of the 68-point scheme that head_pose fits: all but the jaw (0-16), whose labels
# follow the visible outline in some datasets and the 3-D face in others
_HEAD_POSE_POINTS = tuple(range(17, 68))
# the virtual camera's field of view in face widths: nearly orthographic (chosen on the
# AFLW2000-3D dev half, yaw MAE from its labels: 4.20 deg over the buckets vs 4.31 at 4)
_HEAD_POSE_FOV = 20.0


def head_pose(points: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face from its 68 iBUG landmarks, by the 3-D
    canonical face (MediaPipe's, Apache-2.0; :mod:`facepoints.data.profiling`) fitted to
    the 51 points off the jaw with ``cv2.solvePnP``. Conventions as in this module's doc
    (yaw > 0: the subject turns to their left, the nose to the image's right; pitch > 0:
    looks up; roll > 0: tilts clockwise in the image). AFLW2000-3D's yaw has the opposite
    sign."""
    from facepoints.data.canonical import face_model

    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (68, 2):
        raise PoseError(f"head pose needs the 68 iBUG landmarks, got {pts.shape}")
    idx = list(_HEAD_POSE_POINTS)
    return _solve_pose(face_model().points68[idx], pts[idx], None, fov=_HEAD_POSE_FOV)


@dataclass
class PoseTable:
    """Poses of a dataset's samples; ``failed`` lists ``(id, reason)`` of the others."""

    ids: list[str]
    angles: np.ndarray  # (M, 3) yaw, pitch, roll in degrees; NaN where the estimate failed
    failed: list[tuple[str, str]]

    @property
    def yaw(self) -> np.ndarray:
        return self.angles[:, 0]


def dataset_poses(samples, scheme: LandmarkScheme, use_image_size: bool = True) -> PoseTable:
    """Estimate the pose of every sample (image sizes from the file headers; a sample
    whose image cannot be read is estimated with the virtual camera)."""
    from facepoints.data.images import ImageError, image_size

    pose_indices(scheme)  # fail at once, not per sample, for a scheme without a pose
    samples = list(samples)
    angles = np.full((len(samples), 3), np.nan)
    failed = []
    for i, s in enumerate(samples):
        size = None
        if use_image_size:
            try:
                size = image_size(s.image)
            except ImageError:
                size = None
        try:
            angles[i] = estimate_pose(s.landmarks, size, scheme)
        except PoseError as e:
            failed.append((s.id, str(e)))
    return PoseTable([s.id for s in samples], angles, failed)


# --------------------------------------------------------------------------- statistics

DEFAULT_BINS = {"yaw": list(range(-90, 91, 15)), "pitch": list(range(-60, 61, 10)), "roll": list(range(-60, 61, 10))}


def pose_summary(table: PoseTable, bins: dict[str, list[float]] | None = None) -> dict:
    """Counts per bin (values outside the bins go to the end bins), mean, std and
    percentiles of each angle, and every sample's angles."""
    bins = {**DEFAULT_BINS, **(bins or {})}
    ok = np.isfinite(table.angles).all(axis=1)
    out: dict = {"n": len(table.ids), "n_estimated": int(ok.sum()), "failed": [
        {"id": i, "reason": r} for i, r in table.failed]}
    for k, name in enumerate(ANGLES):
        v = table.angles[ok, k]
        edges = np.asarray(bins[name], dtype=np.float64)
        counts = np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0] if len(v) else np.zeros(len(edges) - 1)
        out[name] = {
            "bins": edges.tolist(), "counts": [int(c) for c in counts],
            "mean": float(v.mean()) if len(v) else None, "std": float(v.std()) if len(v) else None,
            "percentiles": {str(p): float(np.percentile(v, p)) for p in (1, 5, 50, 95, 99)} if len(v) else {},
            "abs_over_45": int((np.abs(v) > 45).sum()),
        }
    out["samples"] = [{"id": i, **({n: round(float(a), 2) for n, a in zip(ANGLES, row)} if np.isfinite(row).all() else {})}
                      for i, row in zip(table.ids, table.angles)]
    return out


def plot_histograms(summary: dict, out_dir: str | Path, title: str = "", inputs=()) -> list[Path]:
    """One PNG per angle (``yaw.png``, ``pitch.png``, ``roll.png``) from
    :func:`pose_summary`, never onto one of ``inputs`` (:mod:`facepoints.data.outputs`).
    Agg directly: no pyplot, no global backend change."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from facepoints.data.outputs import write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ANGLES:
        s = summary[name]
        edges = np.asarray(s["bins"])
        fig = Figure(figsize=(6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(edges[:-1], s["counts"], width=np.diff(edges), align="edge", edgecolor="black", color="#4a7ab5")
        ax.set_xlabel(f"{name} (degrees; end bins hold everything beyond)")
        ax.set_ylabel("faces")
        ax.set_xticks(edges)
        ax.tick_params(axis="x", labelsize=7)
        mean = "n/a" if s["mean"] is None else f"{s['mean']:.1f}"
        ax.set_title(f"{title + ': ' if title else ''}{name}, {summary['n_estimated']} faces, mean {mean}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        paths.append(write_bytes(out_dir / f"{name}.png", buf.getvalue(), inputs))
    return paths


# --------------------------------------------------------------------------- balance


def balance_repeats(yaws: np.ndarray, bins: list[float], power: float, max_repeat: int,
                    seed: int | list[int]) -> tuple[np.ndarray, dict]:
    """How many times each sample should appear per epoch to even out yaw buckets.

    A sample in a bucket holding ``n_b`` faces gets ``(n_max / n_b) ** power`` copies
    (``n_max``: the fullest bucket; ``power`` 0 changes nothing, 1 evens the buckets
    out), capped at ``max_repeat``; the fractional part is decided by a seeded draw, so
    the result is deterministic. Yaws outside the bins count in the end buckets;
    samples whose yaw is unknown (NaN) keep 1. Returns (int repeats, summary)."""
    yaws = np.asarray(yaws, dtype=np.float64)
    edges = np.asarray(bins, dtype=np.float64)
    known = np.isfinite(yaws)
    bucket = np.full(len(yaws), -1)
    bucket[known] = np.clip(np.searchsorted(edges, yaws[known], side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(bucket[known], minlength=len(edges) - 1)
    full = counts.max() if counts.size and counts.max() > 0 else 1
    factor = np.ones(len(edges) - 1)
    nz = counts > 0
    factor[nz] = np.minimum((full / counts[nz]) ** power, max_repeat)
    want = np.where(known, factor[bucket.clip(0)], 1.0)
    u = np.random.default_rng(seed).random(len(yaws))
    reps = np.floor(want).astype(np.int64) + (u < want - np.floor(want))
    reps = np.maximum(reps, 1)
    after = np.bincount(bucket[known], weights=reps[known], minlength=len(edges) - 1)
    summary = {"by": "yaw", "bins": edges.tolist(), "counts": counts.tolist(), "factor": [round(float(f), 3) for f in factor],
               "counts_after": [int(a) for a in after], "unknown": int((~known).sum())}
    return reps, summary
