"""MediaPipe's canonical 3-D face (468 vertices, 898 triangles; Apache-2.0,
``canonical_face.npz`` beside this file, made by ``tools/convert_canonical_face.py``,
license in ``canonical_face.LICENSE.txt``) in OpenCV's camera axes, and its 68 iBUG
points: the 3-D face that head pose (:mod:`facepoints.data.pose`) and face profiling
(:mod:`facepoints.data.profiling`) fit to landmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# iBUG 68 index -> MediaPipe mesh vertex (or two, averaged); iBUG's "right" is the
# subject's right, as is MediaPipe's (Peizhi Yan's Mediapipe_2_Dlib_Landmarks table).
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16, the subject's right ear -> chin (8) -> left ear
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, lower nose 31-35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41 (36 outer corner), left eye 42-47 (45 outer corner)
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59, inner lips 60-67
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)


@dataclass(frozen=True)
class FaceModel:
    """The canonical mesh in OpenCV's camera axes (x right, y down, z away from the
    viewer), and its 68 iBUG points."""

    vertices: np.ndarray   # (468, 3)
    triangles: np.ndarray  # (T, 3), counter-clockwise seen from the front
    points68: np.ndarray   # (68, 3)


_MODEL: FaceModel | None = None


def face_model() -> FaceModel:
    global _MODEL
    if _MODEL is None:
        with np.load(Path(__file__).with_name("canonical_face.npz")) as z:
            v = z["vertices"].astype(np.float64) * np.array([1.0, -1.0, -1.0])  # y up -> down, z toward -> away
            tri = z["triangles"].astype(np.int64)
        p68 = np.stack([v[list(idx)].mean(0) for idx in MEDIAPIPE_TO_IBUG68])
        _MODEL = FaceModel(v, _front_winding(v, tri), p68)
    return _MODEL


def mediapipe_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """68 iBUG points from MediaPipe's 468 (or 478) mesh points, ``(..., 468, D)``."""
    mesh = np.asarray(mesh, np.float64)
    return np.stack([mesh[..., list(idx), :].mean(-2) for idx in MEDIAPIPE_TO_IBUG68], -2)


def triangle_normals(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    return np.cross(b - a, c - a)


def _front_winding(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Triangles ordered so that the frontal face's normals point at the viewer (-z)."""
    return tri if (triangle_normals(v, tri)[:, 2] < 0).mean() > 0.5 else tri[:, ::-1].copy()
