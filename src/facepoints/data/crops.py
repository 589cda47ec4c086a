"""Square face crops and the affine maps between an image and its crop.

A crop is defined by a centre and a side in image pixels; the model sees it resized
to ``size`` x ``size``. Every crop is an affine map, so landmarks go into the crop
and back with the same matrix and its inverse: nothing is approximated.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_from_box(box, scale: float) -> tuple[float, float, float]:
    """Centre x, centre y and side of the square ``scale`` times the longer side of
    ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * scale
    return (x0 + x1) / 2, (y0 + y1) / 2, side


def crop_matrix(cx: float, cy: float, side: float, size: int, angle_deg: float = 0.0) -> np.ndarray:
    """2x3 matrix taking image pixel centres to crop pixel centres: the square of
    ``side`` around (cx, cy), rotated by ``angle_deg``, onto ``size`` x ``size``."""
    s = size / side
    a = np.deg2rad(angle_deg)
    c, si = np.cos(a) * s, np.sin(a) * s
    # Rotate/scale about the crop centre, then move it to the output centre.
    out_c = (size - 1) / 2
    return np.array([[c, si, out_c - c * cx - si * cy],
                     [-si, c, out_c + si * cx - c * cy]], dtype=np.float64)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Crop by ``matrix``; outside the image is black, like a detector's padding."""
    interp = cv2.INTER_AREA if abs(np.linalg.det(matrix[:, :2])) < 0.5 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def box_iou(boxes, box) -> np.ndarray:
    """Intersection over union of each of ``boxes`` (K, 4) with ``box``, all x0, y0, x1, y1."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
    inter = ix * iy
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / np.maximum(area, 1e-9)
