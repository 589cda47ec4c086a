"""Production inference: image -> faces -> landmarks in original image coordinates.
No PyTorch here: the network is any backend callable (ONNX Runtime by default).

    predictor = facepoints.load()                 # bundled model, YuNet detector
    faces = predictor.predict("photo.jpg")        # or an RGB uint8 array
    faces[0].box, faces[0].score, faces[0].landmarks   # ndarray (4,), float, ndarray (68, 2)
    faces[0].to_dict()                            # for JSON (rounded there, and only there)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepoints.data.calibration import BoxCalibration
from facepoints.data.crops import crop_matrix, invert, square_from_box, transform_points, warp
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.inference.detectors import DEFAULT_DETECTOR, DETECTORS, get_detector
from facepoints.models.info import ModelInfo


@dataclass(frozen=True)
class Face:
    """One face: ``box`` ``(4,)`` float32 ``x0, y0, x1, y1`` (the detector's box, or the
    box it was given), ``score`` (the detector's, None for a given box) and
    ``landmarks`` ``(P, 2)`` float32 in image pixels."""

    box: np.ndarray
    score: float | None
    landmarks: np.ndarray

    def to_dict(self, digits: int = 2) -> dict:
        """Plain lists for JSON, rounded to ``digits`` decimals (the score to 4)."""
        return {"box": [round(float(v), digits) for v in self.box],
                "score": None if self.score is None else round(float(self.score), 4),
                "landmarks": [[round(float(x), digits), round(float(y), digits)] for x, y in self.landmarks]}


def checked_boxes(boxes, what: str = "boxes") -> np.ndarray:
    """``(K, 4)`` float32 ``x0, y0, x1, y1``; refuses NaN/inf, empty and inverted boxes."""
    try:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be (K, 4) numbers x0, y0, x1, y1 ({e})") from None
    bad = ~np.isfinite(b).all(axis=1) | ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
    if bad.any():  # the first bad box, named (one vectorised test: this runs on every call)
        i = int(np.flatnonzero(bad)[0])
        x0, y0, x1, y1 = b[i].tolist()
        if not np.isfinite(b[i]).all():
            raise ValueError(f"{what}[{i}] = {[x0, y0, x1, y1]}: not finite")
        raise ValueError(f"{what}[{i}] = {[x0, y0, x1, y1]}: empty or inverted (need x1 > x0 and y1 > y0)")
    return b.astype(np.float32)


class Predictor:
    """A landmark model plus a face detector.

    ``refine``: after landmarks are found from a detector box, crop again around those
    landmarks and predict once more, this many times (None: what the model file
    recommends, ``info.recipe["inference"]["refine"]``, else 1). It makes the result independent
    of how a detector draws its boxes, at the cost of one more network pass.

    ``flip``: also run the mirrored crop and average the two (re-indexed through the
    scheme): test-time augmentation, twice the network cost. ``None``: what the model
    file recommends (``info.recipe["inference"]["flip"]``, chosen on validation data).

    ``detector``: a name in :data:`facepoints.inference.detectors.DETECTORS`, a detector
    object, or None (no detector: pass boxes to :meth:`predict`); ``"auto"``: the one the
    model file recommends (``info.recipe["inference"]["detector"]``; BlazeFace for the
    bundled fast model), else YuNet.

    ``detect_size``: the detector sees the image downscaled to this longest side; None:
    what the model file recommends (``info.recipe["inference"]["detect_size"]``), else the
    detector's own default (YuNet 960, BlazeFace 128). Smaller is faster and misses small faces
    (``benchmarks/whole_image.md`` measures both). ``detector_threads``: the YuNet
    detector's threads (1 by default, as the network's).

    ``model``: any backend callable ``run(batch) -> landmarks`` (float32 ``(B, 3, S, S)``
    in [0, 1] -> ``(B, P, 2)`` crop units), e.g. :class:`facepoints.inference.runtime.OnnxRunner`
    (or, with PyTorch, :class:`facepoints.deploy.runners.TorchRunner`). ``facepoints.load()``
    builds one from a model file.
    """

    def __init__(self, model, info: ModelInfo, detector: str | object | None = "auto",
                 refine: int | None = None, flip: bool | None = None, detect_size: int | None = None,
                 detector_threads: int | None = None):
        if not callable(model) or hasattr(model, "state_dict"):
            raise TypeError(f"model must be a backend callable run(batch) -> landmarks, not {type(model).__name__} "
                            "(a PyTorch module goes in facepoints.deploy.runners.TorchRunner)")
        self.run = model
        self.info = info
        self.scheme = info.landmark_scheme
        recommended = info.recipe.get("inference", {}) if isinstance(info.recipe.get("inference"), dict) else {}
        # None: what the model file recommends (chosen by measurement for it), else 1 refinement pass
        if refine is None:
            refine = recommended.get("refine")
        self.refine = 1 if refine is None else int(refine)
        if flip is None:
            flip = bool(recommended.get("flip", False))
        self.flip = flip and self.scheme.has_flip
        if isinstance(detector, str) and detector.strip().lower() == "auto":
            detector = recommended.get("detector") or DEFAULT_DETECTOR
        if detect_size is None and isinstance(detector, str):  # what the model file recommends, if anything
            detect_size = recommended.get("detect_size")
        if isinstance(detector, str):
            if detector.strip().lower() not in DETECTORS:  # once, here, not once per image
                raise ValueError(f"unknown face detector {detector!r}; choose one of: {', '.join(DETECTORS)}")
        self._detector_spec = detector
        self.detect_size = detect_size
        self.detector_threads = detector_threads
        self._detector = None if isinstance(detector, (str, type(None))) else detector
        self._calibrations: dict[str | None, BoxCalibration] = {}  # detector name -> its box calibration
        if detect_size is not None and self._detector is not None:
            raise ValueError("detect_size applies to a detector given by name; set the max_side of a detector object")

    @property
    def detector(self):
        if self._detector is None:
            if self._detector_spec is None:
                raise ValueError("this predictor has no face detector; pass boxes to predict()")
            kw = {} if self.detect_size is None else {"max_side": int(self.detect_size)}
            cls = DETECTORS[str(self._detector_spec).strip().lower()]
            if self.detector_threads and "threads" in inspect.signature(cls).parameters:  # YuNet, BlazeFace
                kw["threads"] = int(self.detector_threads)
            self._detector = get_detector(self._detector_spec, **kw)
        return self._detector

    def to_landmark_box(self, boxes: np.ndarray) -> np.ndarray:
        """Detector-style face boxes -> tight landmark boxes: by the calibration the model
        file recorded for this predictor's detector (``info.box_calibrations``), else the
        detector's own; YuNet's (the default detector) for a predictor without one. A
        detector given by name is not loaded for this."""
        detector = self._detector
        name = getattr(detector, "name", None) if detector is not None else (self._detector_spec or DEFAULT_DETECTOR)
        name = str(name).strip().lower() if name else None
        calibration = self._calibrations.get(name)
        if calibration is None:
            recorded = self.info.box_calibrations.get(name) if name else None
            if recorded:
                calibration = BoxCalibration(**recorded)
            elif detector is not None:
                return detector.to_landmark_box(boxes)
            elif name not in DETECTORS:
                raise ValueError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
            else:
                calibration = DETECTORS[name].calibration
            self._calibrations[name] = calibration
        return calibration.apply(boxes)

    def network_input(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list]:
        """The batch the network gets for faces whose tight landmark boxes are ``boxes``
        ``(K, 4)``: float32 ``(K, 3, S, S)`` RGB in [0, 1] (``2K`` with ``flip``: the
        mirrored crops follow), and the K crop matrices. Calibration of quantised
        exports uses this, so it sees exactly what inference feeds the network."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        size, scale = self.info.input_size, self.info.crop_scale
        mats = [crop_matrix(*square_from_box(b, scale), size) for b in boxes]
        crops = np.stack([warp(image, m, size) for m in mats])
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        if self.flip:
            x = np.concatenate([x, x[..., ::-1]])
        return np.ascontiguousarray(x), mats

    def landmarks_in_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks ``(K, P, 2)`` for faces whose tight landmark boxes are ``boxes``
        ``(K, 4)``; all faces of the image go through the network as one batch."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.scheme.num_points, 2), np.float32)
        size = self.info.input_size
        x, mats = self.network_input(image, boxes)
        out = np.asarray(self.run(x), dtype=np.float32) * (size - 1)
        if self.flip:
            k = len(boxes)
            mirrored = np.stack([self.scheme.flip_landmarks(p, size) for p in out[k:]])
            out = (out[:k] + mirrored) / 2
        return np.stack([transform_points(p, invert(m)) for p, m in zip(out, mats)])

    def predict(self, image, boxes=None, landmark_boxes=None) -> list[Face]:
        """Faces in ``image`` (a path, or an RGB uint8 array) with their landmarks.

        Without boxes the detector finds every face. ``boxes`` ``(K, 4)``: face boxes as
        the detector draws them (e.g. the ``box`` of faces this method returned, or
        another run's); they go through the same calibration and refinement as the
        detector's own, so feeding back a returned box gives the same landmarks.
        ``landmark_boxes`` ``(K, 4)``: tight boxes around each face's landmarks (as a
        ground-truth box is, the evaluation protocol), used as they are, no refinement.
        """
        img = read_image(image) if isinstance(image, (str, Path, bytes)) else np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
        if boxes is not None and landmark_boxes is not None:
            raise ValueError("give boxes (detector-style) or landmark_boxes (tight), not both")
        if landmark_boxes is not None:
            tight = checked_boxes(landmark_boxes, "landmark_boxes")
            pts = self.landmarks_in_boxes(img, tight)
            return [Face(b, None, p) for b, p in zip(tight, pts)]
        if boxes is not None:
            face_boxes, scores = checked_boxes(boxes), [None] * len(np.asarray(boxes).reshape(-1, 4))
        else:
            det = self.detector.detect(img)
            face_boxes, scores = det.boxes, [float(s) for s in det.scores]
        if len(face_boxes) == 0:
            return []
        pts = self.landmarks_in_boxes(img, self.to_landmark_box(face_boxes))
        for _ in range(self.refine):
            pts = self.landmarks_in_boxes(img, np.stack([landmark_box(p) for p in pts]))
        return [Face(b, s, p) for b, s, p in zip(face_boxes, scores, pts)]
