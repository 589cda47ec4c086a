"""From a face detector's box to the crop a landmark model was trained on.

At training time the crop comes from the ground-truth landmarks: the tight box of the
points, squared and scaled by ``crop_scale``. At inference a face detector proposes the
box, and each draws its boxes its own way (YuNet includes the forehead, dlib's HOG box
stops at the brows, ...): a :class:`BoxCalibration` maps one to the tight-landmark-box
convention. The numbers are measured by ``benchmarks/detectors.py`` on 300-W photos;
model files record the ones they were made with (``ModelInfo.box_calibrations``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BoxCalibration:
    """Map a detector box to the tight box of the iBUG 68 landmarks.

    With the detector box's width ``w``, height ``h`` and centre ``(cx, cy)``::

        centre = (cx + dx * w, cy + dy * h)
        size   = (sw * w, sh * h)
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64)
        single = b.ndim == 1
        b = b.reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * h
        hw, hh = self.sw * w / 2, self.sh * h / 2
        out = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)
        return out[0] if single else out

    def unapply(self, boxes: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`apply`: the detector-style box of a tight landmark box."""
        b = np.asarray(boxes, dtype=np.float64)
        single = b.ndim == 1
        b = b.reshape(-1, 4)
        w, h = (b[:, 2] - b[:, 0]) / self.sw, (b[:, 3] - b[:, 1]) / self.sh
        cx = (b[:, 0] + b[:, 2]) / 2 - self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 - self.dy * h
        out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        return out[0] if single else out

    @classmethod
    def fit(cls, det_boxes: np.ndarray, target_boxes: np.ndarray) -> "BoxCalibration":
        """Median of the per-face ratios (robust to the odd bad match)."""
        d = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        t = np.asarray(target_boxes, np.float64).reshape(-1, 4)
        if len(d) == 0 or len(d) != len(t):
            raise ValueError("need the same, non-zero number of detector and target boxes")
        dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
        dx = ((t[:, 0] + t[:, 2]) - (d[:, 0] + d[:, 2])) / 2 / dw
        dy = ((t[:, 1] + t[:, 3]) - (d[:, 1] + d[:, 3])) / 2 / dh
        sw = (t[:, 2] - t[:, 0]) / dw
        sh = (t[:, 3] - t[:, 1]) / dh
        return cls(*(round(float(np.median(v)), 4) for v in (dx, dy, sw, sh)))

    def to_dict(self) -> dict:
        return asdict(self)


# detector name -> calibration to the tight box of the iBUG 68 landmarks
DETECTOR_CALIBRATIONS = {
    "yunet": BoxCalibration(dx=0.009, dy=0.1288, sw=1.0355, sh=0.7616),
    "dlib-hog": BoxCalibration(dx=-0.0168, dy=0.0879, sw=0.9769, sh=0.9357),
    "haar": BoxCalibration(dx=-0.014, dy=0.1488, sw=0.8862, sh=0.8594),
    "blazeface": BoxCalibration(dx=0.0014, dy=0.0502, sw=0.9639, sh=0.933),
}


def calibration_record() -> dict:
    """What a new model file stores: every detector's calibration, as plain numbers."""
    return {name: c.to_dict() for name, c in DETECTOR_CALIBRATIONS.items()}
