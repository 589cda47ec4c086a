"""Detector calibrations fitted per model, for its own scheme and crop (issue 27).

A model is trained on crops around its own landmarks' tight box; at inference a face
detector proposes the box, and a :class:`~facepoints.data.calibration.BoxCalibration`
maps the detector's convention to that tight box. The built-in numbers were measured
for the 68 iBUG points; a model with other points (5, 98, N) needs its own: for each
detector, run it on the training photos, match its boxes to the labelled faces (the
detection that holds the centre of the face's landmark box, best score first), and fit
the map robustly (median of the per-face ratios). A detector that finds fewer than
``min_faces`` of the faces is refused for the model, never given another scheme's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facepoints.data.calibration import BoxCalibration
from facepoints.data.images import ImageError, read_image
from facepoints.data.samples import landmark_box

MIN_FACES = 20


@dataclass
class DetectorFit:
    name: str
    faces: int                      # labelled faces looked at
    matched: int                    # ... that the detector found
    calibration: BoxCalibration | None = None
    reason: str = ""                # why refused
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        out = {"faces": self.faces, "matched": self.matched}
        if self.calibration is None:
            out["refused"] = self.reason
        return out


def match_detection(boxes: np.ndarray, scores: np.ndarray, target: np.ndarray) -> int | None:
    """The detection that holds the centre of ``target`` (a landmark box), best score
    first; None if none does."""
    if not len(boxes):
        return None
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
    inside = np.flatnonzero((boxes[:, 0] <= cx) & (boxes[:, 2] >= cx) & (boxes[:, 1] <= cy) & (boxes[:, 3] >= cy))
    if not len(inside):
        return None
    return int(inside[np.argmax(np.asarray(scores)[inside])])


def fit_detector(detector, samples, min_faces: int = MIN_FACES, max_faces: int = 400,
                 seed: int = 0) -> DetectorFit:
    """Fit ``detector``'s calibration to the tight box of ``samples``' landmarks (at most
    ``max_faces`` of them, drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    pick = samples if len(samples) <= max_faces else [samples[i] for i in sorted(rng.choice(len(samples), max_faces,
                                                                                              replace=False))]
    det_boxes, targets, notes = [], [], []
    for s in pick:
        try:
            img = read_image(s.image)
        except ImageError as e:
            notes.append(str(e))
            continue
        d = detector.detect(img)
        target = landmark_box(s.landmarks)
        k = match_detection(d.boxes, d.scores, target)
        if k is not None:
            det_boxes.append(d.boxes[k])
            targets.append(target)
    fit = DetectorFit(detector.name, len(pick), len(det_boxes), notes=notes)
    if len(det_boxes) < min_faces:
        fit.reason = (f"found {len(det_boxes)} of {len(pick)} training faces, fewer than {min_faces}: too few to fit "
                      "its boxes to this model's crops")
        return fit
    fit.calibration = BoxCalibration.fit(np.stack(det_boxes), np.stack(targets))
    return fit


def calibrate_detectors(model_path, samples, detectors=("yunet", "blazeface"), out=None,
                        min_faces: int = MIN_FACES, max_faces: int = 400) -> list[DetectorFit]:
    """Fit each detector for the model file at ``model_path`` on ``samples`` (its training
    faces) and write the model with the fitted calibrations (``out``, default: in place)
    and, for refused detectors, why (``recipe["detector_fit"]``)."""
    from facepoints.inference.detectors import get_detector
    from facepoints.models.package import load_model, save_model

    model, info = load_model(model_path)
    fits = [fit_detector(get_detector(name), samples, min_faces, max_faces) for name in detectors]
    cal = dict(info.box_calibrations)
    for f in fits:
        if f.calibration is not None:
            cal[f.name] = f.calibration.to_dict()
        else:
            cal.pop(f.name, None)
    info.box_calibrations = cal
    info.recipe = {**info.recipe, "detector_fit": {f.name: f.record() for f in fits}}
    save_model(model, info, out or model_path)
    return fits
