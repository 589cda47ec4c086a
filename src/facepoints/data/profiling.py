"""Large-pose training faces made from frontal ones ("face profiling", as 300W-LP was
made: Zhu et al., CVPR 2016): fit a 3-D face to a photo's 68 labels, turn it in yaw
(and a little pitch), warp the photo with a dense mesh that also moves the background,
and take the turned 3-D points as the new labels.

* The 3-D face is MediaPipe's canonical face model (:mod:`facepoints.data.canonical`),
  mapped to the 68 iBUG points.
* Fit: a scaled orthographic camera (rotation, scale, shift) by least squares on the
  68 labels; the labels themselves keep their x, y (the model's residual at the labels
  is spread over the mesh by a thin-plate spline), the model gives the depth.
* Turn: about the vertical axis through the model's origin (the head's centre), to a
  target yaw drawn on the side the face already turns to.
* Warp: backward mapping (``cv2.remap``) through a piecewise-linear field over the
  mesh vertices visible before and after the turn, a ring around the face and the image
  border (those two fixed), so the background bends instead of tearing.
* Labels: the turned 3-D points, far-side points where the 3-D face puts them (hidden,
  not on the visible outline), as in AFLW2000-3D and 300W-LP; ``visible`` says which
  ones a z-buffer of the turned mesh leaves in view.

Written as a 300-W folder (``NAME.jpg`` + ``NAME.pts``) with ``yaw.csv`` (the target yaw)
and ``visible.csv`` (one 0/1 per point), which ``read_dataset("300w:...")`` reads back.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepoints.data.canonical import FaceModel, face_model, triangle_normals
from facepoints.data.images import read_image
from facepoints.data.pose import rotation_matrix as rotation


@dataclass
class Fit:
    rotation: np.ndarray   # (3, 3) model -> camera
    scale: float           # pixels per model unit
    shift: np.ndarray      # (2,) image position of the model's origin

    @property
    def yaw(self) -> float:
        """Degrees, the sign of :func:`facepoints.data.pose.rotation_matrix`."""
        r = self.rotation
        return math.degrees(math.atan2(-r[0, 2], r[2, 2]))

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Model points -> camera points (x, y in pixels; z in pixels, 0 at the model's origin)."""
        cam = self.scale * pts @ self.rotation.T
        cam[:, :2] += self.shift
        return cam


def fit_face(labels: np.ndarray, model: FaceModel | None = None) -> Fit:
    """Scaled orthographic fit of the model's 68 points to 68 labels (least squares,
    then the nearest rotation)."""
    model = model or face_model()
    m = model.points68
    mc, lc = m - m.mean(0), labels - labels.mean(0)
    a, *_ = np.linalg.lstsq(mc, lc, rcond=None)         # (3, 2): lc ~ mc @ a
    u, s, vt = np.linalg.svd(a.T, full_matrices=False)   # rows of a.T ~ scale * first two rows of R
    r2 = u @ vt
    scale = float(s.mean())
    r = np.vstack([r2, np.cross(r2[0], r2[1])])
    shift = labels.mean(0) - scale * (m.mean(0) @ r[:2].T)
    return Fit(r, scale, shift)


def _tps(src: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    from scipy.interpolate import RBFInterpolator

    return RBFInterpolator(src, values, kernel="thin_plate_spline", smoothing=1.0)(at)


@dataclass
class Profiled:
    image: np.ndarray     # RGB uint8, the same size as the input
    points: np.ndarray    # (68, 2) turned labels
    visible: np.ndarray   # (68,) bool
    yaw: float            # the target yaw, degrees (the fit's convention)
    source_yaw: float


def _behind(cam: np.ndarray, verts: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """How far (depth units) each camera point lies behind the nearest front-facing surface
    of the mesh ``verts``/``tri`` at its image position, the surface's depth interpolated
    inside its triangle; -inf where no surface covers the point."""
    front = tri[triangle_normals(verts, tri)[:, 2] < 0]
    a, b, c = (verts[front[:, k]] for k in range(3))              # (T, 3)
    v0, v1 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-9, np.nan, det)
    d = cam[:, None, :2] - a[None, :, :2]                           # (N, T, 2)
    u = (d[..., 0] * v1[:, 1] - d[..., 1] * v1[:, 0]) / det        # barycentric weight of b
    v = (v0[:, 0] * d[..., 1] - v0[:, 1] * d[..., 0]) / det        # of c
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    z = a[:, 2] + u * (b[:, 2] - a[:, 2]) + v * (c[:, 2] - a[:, 2])  # surface depth at the point
    nearest = np.where(inside, z, np.inf).min(1)
    return cam[:, 2] - nearest


def profile_face(image: np.ndarray, labels: np.ndarray, target_yaw: float, pitch: float = 0.0,
                 model: FaceModel | None = None) -> Profiled:
    """Turn the face of ``image`` (labelled with 68 iBUG points) to ``target_yaw`` degrees
    (and add ``pitch``); see the module doc."""
    model = model or face_model()
    h, w = image.shape[:2]
    fit = fit_face(labels, model)
    verts = fit.project(model.vertices)
    p68 = fit.project(model.points68)
    # the labels keep their own x, y; the model's residual there bends the whole mesh
    resid = labels - p68[:, :2]
    verts[:, :2] += _tps(p68[:, :2], resid, verts[:, :2])
    p68[:, :2] = labels
    turn = rotation(target_yaw - fit.yaw, pitch, 0.0)
    # turn about the vertical axis through the model's origin: camera frame rotated by
    # R_fit @ turn @ R_fit^T would turn about the head's own axes; turning in camera axes
    # keeps "yaw" the image's horizontal turn, which is what the label convention follows
    centre = np.array([fit.shift[0], fit.shift[1], 0.0])
    new_verts = (verts - centre) @ turn.T + centre
    new_p68 = (p68 - centre) @ turn.T + centre

    tri = model.triangles
    tol = 0.5 * fit.scale  # half a model unit (~5 mm): a point on the surface, not behind it
    keep = (_behind(verts, verts, tri) <= tol) & (_behind(new_verts, new_verts, tri) <= tol)
    # vertices seen before and after; a ring around the face and the image border stay put
    face_c = labels.mean(0)
    radius = np.abs(labels - face_c).max(0)
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = face_c + np.stack([np.cos(ang), np.sin(ang)], 1) * radius * 1.9
    bx = np.linspace(0, w - 1, 9)
    by = np.linspace(0, h - 1, 9)
    border = np.concatenate([np.stack([bx, np.zeros_like(bx)], 1), np.stack([bx, np.full_like(bx, h - 1)], 1),
                             np.stack([np.zeros_like(by), by], 1), np.stack([np.full_like(by, w - 1), by], 1)])
    fixed = np.concatenate([ring, border])
    dst = np.concatenate([new_verts[keep, :2], fixed])
    src = np.concatenate([verts[keep, :2], fixed])
    from scipy.interpolate import LinearNDInterpolator

    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    back = LinearNDInterpolator(dst, src - dst)(np.stack([gx.ravel(), gy.ravel()], 1))
    back = np.nan_to_num(back).reshape(h, w, 2).astype(np.float32)
    warped = cv2.remap(image, gx + back[..., 0], gy + back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # visibility: a point is hidden when the turn puts a surface of the mesh in front of it
    # (its depth behind the nearest surface grows by more than ``tol``); a labelled point
    # counts as seen in the photo, where the generic mesh may not fit the outline exactly
    visible = _behind(new_p68, new_verts, tri) <= np.maximum(_behind(p68, verts, tri), 0) + tol
    return Profiled(warped, new_p68[:, :2].astype(np.float32), visible, float(target_yaw), fit.yaw)


def draw_target_yaw(source_yaw: float, rng: np.random.Generator, low: float = 25.0, high: float = 85.0) -> float:
    """A target |yaw| uniform in [low, high] degrees, on the side the face already turns to
    (either side, at random, for a face within 5 degrees of frontal)."""
    side = np.sign(source_yaw) if abs(source_yaw) > 5 else rng.choice([-1.0, 1.0])
    return float(side * rng.uniform(max(low, abs(source_yaw)), high))


def write_profiled(dataset, out: str | Path, copies: int = 1, seed: int = 0, low: float = 25.0,
                   high: float = 85.0, pitch: float = 10.0, progress: bool = True) -> int:
    """Write ``copies`` turned versions of every face of a 68-point ``dataset`` into a 300-W
    folder ``out`` (``NAME_pK.jpg`` + ``.pts``), with ``yaw.csv`` and ``visible.csv``.
    Returns the number of faces written."""
    from facepoints.data.formats import write_pts

    if dataset.scheme.num_points != 68:
        raise ValueError(f"face profiling needs 68-point iBUG labels; {dataset.name} has {dataset.scheme.num_points}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows_yaw, rows_vis = [], []
    it = dataset.samples
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="profiling", unit="face")
    for s in it:
        img = read_image(s.image)
        src_yaw = fit_face(s.landmarks).yaw
        for k in range(copies):
            res = profile_face(img, s.landmarks, draw_target_yaw(src_yaw, rng, low, high),
                               float(rng.uniform(-pitch, pitch)))
            name = f"{Path(s.id).with_suffix('').as_posix().replace('/', '__')}_p{k}"
            cv2.imwrite(str(out / f"{name}.jpg"), cv2.cvtColor(res.image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_pts(res.points, out / f"{name}.pts")
            rows_yaw.append((name, f"{res.yaw:.2f}"))
            rows_vis.append((name, *(int(v) for v in res.visible)))
    with open(out / "yaw.csv", "w", newline="") as f:
        csv.writer(f).writerows([("name", "yaw_degrees"), *rows_yaw])
    with open(out / "visible.csv", "w", newline="") as f:
        csv.writer(f).writerows([("name", *(f"v{i}" for i in range(68))), *rows_vis])
    return len(rows_yaw)
