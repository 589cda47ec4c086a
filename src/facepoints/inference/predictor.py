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
from facepoints.errors import TooLargeError, UsageError
from facepoints.inference.detectors import DEFAULT_DETECTOR, DETECTORS, get_detector
from facepoints.models.info import ModelFileError, ModelInfo


# faces per network call (bounded memory whatever an image holds), and the default limit
# of faces per image (Predictor.max_faces; the service answers 413 beyond it)
BATCH = 32
MAX_FACES = 256


@dataclass(frozen=True)
class Face:
    """One face: ``box`` ``(4,)`` float32 ``x0, y0, x1, y1`` (the detector's box, or the
    box it was given), ``score`` (the detector's, None for a given box) and
    ``landmarks`` ``(P, 2)`` float32 in image pixels.

    Trust, where the model has it (None otherwise): ``error_radius`` ``(P,)`` pixels, the
    radius around each point that holds the true point 90 % of the time (calibrated on
    held-out faces); ``visible`` ``(P,)`` the probability that each point is in view (not
    covered, not turned away); ``quality`` 0-1, higher for faces whose points the model
    is surer of (2 ** -(mean radius / the median held-out face's)). ``pose``: head yaw,
    pitch, roll in degrees from the landmarks (68-point schemes; yaw > 0: the subject
    turns to their left, the image's right; pitch > 0: looks up; roll > 0: clockwise)."""

    box: np.ndarray
    score: float | None
    landmarks: np.ndarray
    error_radius: np.ndarray | None = None
    visible: np.ndarray | None = None
    quality: float | None = None
    pose: dict | None = None

    def to_dict(self, digits: int = 2) -> dict:
        """Plain lists for JSON, rounded to ``digits`` decimals (the score, visibility and
        quality to 4, angles to 1); trust and pose keys only where the face has them."""
        out = {"box": [round(float(v), digits) for v in self.box],
               "score": None if self.score is None else round(float(self.score), 4),
               "landmarks": [[round(float(x), digits), round(float(y), digits)] for x, y in self.landmarks]}
        if self.error_radius is not None:
            out["error_radius"] = [round(float(r), digits) for r in self.error_radius]
        if self.visible is not None:
            out["visible"] = [round(float(v), 4) for v in self.visible]
        if self.quality is not None:
            out["quality"] = round(float(self.quality), 4)
        if self.pose is not None:
            out["pose"] = {k: round(float(v), 1) for k, v in self.pose.items()}
        return out


@dataclass(frozen=True)
class ImageResult:
    """Every face of one image: what ``predict --json``, ``--out`` and the service write
    (``to_dict``), one shape everywhere. ``image``: the path, where there is one."""

    width: int
    height: int
    scheme: str
    faces: list
    image: str | None = None

    def to_dict(self, digits: int = 2) -> dict:
        out = {"image": self.image} if self.image is not None else {}
        return {**out, "width": int(self.width), "height": int(self.height), "scheme": self.scheme,
                "faces": [f.to_dict(digits) for f in self.faces]}

    def converted(self, scheme: str) -> "ImageResult":
        """The same faces with landmarks in another scheme (:func:`facepoints.data.convert.convert`;
        per-point trust is dropped, since it belongs to the source points)."""
        import dataclasses

        from facepoints.data.convert import convert

        if scheme == self.scheme:
            return self
        faces = [dataclasses.replace(f, landmarks=convert(f.landmarks, self.scheme, scheme), error_radius=None,
                                     visible=None) for f in self.faces]
        return ImageResult(self.width, self.height, scheme, faces, self.image)

    def draw(self, image: np.ndarray) -> np.ndarray:
        """``image`` (RGB) with every face's landmarks drawn (hidden points hollow)."""
        from facepoints.data.draw import draw_faces
        from facepoints.schemes import get_scheme

        return draw_faces(image, self.faces, get_scheme(self.scheme))

    def save(self, json_path, image: np.ndarray | None = None, png_path=None, inputs=()) -> None:
        """Write the JSON (and, given the image, the annotated PNG) by the output rules of
        :mod:`facepoints.data.outputs` (never onto an input, never through a link)."""
        import json

        from facepoints.data.images import write_image
        from facepoints.data.outputs import write_text

        write_text(json_path, json.dumps(self.to_dict(), indent=1), inputs)
        if image is not None and png_path is not None:
            write_image(png_path, self.draw(image), inputs=inputs)


def as_rgb(image, bgr: bool = False) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from a path, bytes, a PIL image or an array (see
    :meth:`Predictor.predict`)."""
    if isinstance(image, (str, Path, bytes)):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image, any mode
        return np.asarray(image.convert("RGB"))
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype} {img.shape} (scale floats to 0-255 first)")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"image must be (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA, got {img.shape}")
    return np.ascontiguousarray(img[:, :, ::-1]) if bgr else img


def face_pose(landmarks: np.ndarray) -> dict | None:
    """{"yaw", "pitch", "roll"} in degrees for 68 landmarks (:func:`facepoints.data.pose.head_pose`),
    None for other schemes or where no pose can be fitted."""
    from facepoints.data.pose import PoseError, head_pose

    if landmarks.shape != (68, 2):
        return None
    try:
        return dict(zip(("yaw", "pitch", "roll"), head_pose(landmarks)))
    except PoseError:
        return None


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
                 detector_threads: int | None = None, max_faces: int = MAX_FACES):
        if not callable(model) or hasattr(model, "state_dict"):
            raise TypeError(f"model must be a backend callable run(batch) -> landmarks, not {type(model).__name__} "
                            "(a PyTorch module goes in facepoints.deploy.runners.TorchRunner)")
        self.run = model
        self.info = info
        if not (isinstance(max_faces, int) and max_faces >= 1):
            raise ValueError(f"max_faces must be a whole number >= 1, got {max_faces!r}")
        self.max_faces = max_faces
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
                raise UsageError(f"unknown face detector {detector!r}; choose one of: {', '.join(DETECTORS)}")
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
            fitted = (self.info.recipe.get("detector_fit") or {}) if isinstance(self.info.recipe, dict) else {}
            if recorded:
                calibration = BoxCalibration(**recorded)
            elif name in fitted or (self.scheme.num_points != 68 and detector is None):
                # a model with its own points: only detectors fitted to its crops (never the
                # 68-point numbers, which would crop the wrong box)
                why = (fitted.get(name) or {}).get("refused", "no calibration was fitted for it")
                raise ModelFileError(f"this {self.scheme.num_points}-point model cannot use the {name!r} face detector: "
                                     f"{why}; fit one with `facepoints calibrate-detectors`, choose another detector, "
                                     "or pass boxes")
            elif detector is not None:
                return detector.to_landmark_box(boxes)
            elif name not in DETECTORS:
                raise UsageError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
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
        return self.faces_in_boxes(image, boxes, trust=False)[0]

    def faces_in_boxes(self, image: np.ndarray, boxes: np.ndarray, trust: bool = True):
        """``(landmarks (K, P, 2), error_radius (K, P) px or None, visible (K, P) or None)``
        for faces whose tight landmark boxes are ``boxes`` ``(K, 4)``, in batches of
        :data:`BATCH`; ``trust=False`` (refinement passes, the evaluation protocol) skips
        the trust outputs."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        p = self.scheme.num_points
        if len(boxes) == 0:
            return np.zeros((0, p, 2), np.float32), None, None
        if len(boxes) > BATCH:  # bounded memory: the network sees at most BATCH faces at a time
            parts = [self.faces_in_boxes(image, boxes[i:i + BATCH], trust) for i in range(0, len(boxes), BATCH)]
            joined = [None if parts[0][j] is None else np.concatenate([q[j] for q in parts]) for j in range(3)]
            return joined[0], joined[1], joined[2]
        size, k = self.info.input_size, len(boxes)
        x, mats = self.network_input(image, boxes)
        run_trust = getattr(self.run, "run_trust", None) if trust and getattr(self.run, "has_trust", False) else None
        out, scores = run_trust(x) if run_trust is not None else (self.run(x), None)
        out = np.asarray(out, dtype=np.float32) * (size - 1)
        if self.flip:
            mirrored = np.stack([self.scheme.flip_landmarks(q, size) for q in out[k:]])
            out = (out[:k] + mirrored) / 2
            if scores is not None:
                scores = (scores[:k] + scores[k:][:, self.scheme.flip_permutation]) / 2
        pts = np.stack([transform_points(q, invert(m)) for q, m in zip(out, mats)])
        if scores is None:
            return pts, None, None
        radius = None
        factors = self.info.trust.get("radius90")
        if factors is not None and len(factors) == p:
            # crop units -> crop pixels -> image pixels (a crop matrix scales by sqrt|det|)
            px = np.array([1.0 / np.sqrt(abs(np.linalg.det(np.asarray(m)[:2, :2]))) for m in mats])
            radius = (scores[..., 0] * np.asarray(factors, np.float32) * (size - 1) * px[:, None]).astype(np.float32)
        return pts, radius, scores[..., 1].astype(np.float32)

    def _faces(self, boxes, scores, image, tight, pose: bool = True) -> list[Face]:
        """Faces from their final tight boxes: landmarks, trust and (``pose``) head pose."""
        pts, radius, visible = self.faces_in_boxes(image, tight)
        scale = self.info.trust.get("quality_scale")
        out = []
        for i, (b, s, q) in enumerate(zip(boxes, scores, pts)):
            r = None if radius is None else radius[i]
            quality = None
            if r is not None and scale:
                side = float(np.ptp(q, axis=0).max()) * self.info.crop_scale  # the crop's side in pixels
                quality = float(2.0 ** (-(float(r.mean()) / max(side, 1e-6)) / scale))
            out.append(Face(b, s, q, r, None if visible is None else visible[i], quality,
                            face_pose(q) if pose else None))
        return out

    def result(self, image, bgr: bool = False) -> ImageResult:
        """Every face of one image as an :class:`ImageResult` (what ``predict --json``,
        ``--out`` and the service write); ``image`` as :meth:`predict` takes it."""
        img = as_rgb(image, bgr)
        path = str(image) if isinstance(image, (str, Path)) else None
        return ImageResult(img.shape[1], img.shape[0], self.scheme.name, self.predict(img), image=path)

    def predict(self, image, boxes=None, landmark_boxes=None, bgr: bool = False, pose: bool = True):
        """Faces in ``image`` with their landmarks. ``image``: a path, encoded bytes, a PIL
        image (any mode), or a uint8 array (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA;
        ``bgr=True`` for an array in OpenCV's channel order (``cv2.imread``), which read as
        RGB would move the points. A list of images gives a list of face lists.

        Without boxes the detector finds every face. ``boxes`` ``(K, 4)``: face boxes as
        the detector draws them (e.g. the ``box`` of faces this method returned, or
        another run's); they go through the same calibration and refinement as the
        detector's own, so feeding back a returned box gives the same landmarks.
        ``landmark_boxes`` ``(K, 4)``: tight boxes around each face's landmarks (as a
        ground-truth box is, the evaluation protocol), used as they are, no refinement.
        ``pose=False`` leaves out the head-pose fit (``Face.pose`` None), for a caller that
        fits it on other points (the tracker, on the smoothed ones).
        """
        if isinstance(image, (list, tuple)):
            if boxes is not None or landmark_boxes is not None:
                raise ValueError("boxes go with one image; for a list of images call predict per image")
            return [self.predict(im, bgr=bgr, pose=pose) for im in image]
        img = as_rgb(image, bgr)
        if boxes is not None and landmark_boxes is not None:
            raise ValueError("give boxes (detector-style) or landmark_boxes (tight), not both")
        if landmark_boxes is not None:
            tight = checked_boxes(landmark_boxes, "landmark_boxes")
            return self._faces(tight, [None] * len(tight), img, tight, pose)
        if boxes is not None:
            face_boxes, scores = checked_boxes(boxes), [None] * len(np.asarray(boxes).reshape(-1, 4))
        else:
            det = self.detector.detect(img)
            face_boxes, scores = det.boxes, [float(s) for s in det.scores]
        if len(face_boxes) == 0:
            return []
        if len(face_boxes) > self.max_faces:
            raise TooLargeError(f"{len(face_boxes)} faces in one image; the limit is {self.max_faces} (max_faces, "
                                "to bound time and memory per image): raise it or crop the image")
        tight = self.to_landmark_box(face_boxes)
        for _ in range(self.refine):
            tight = np.stack([landmark_box(p) for p in self.landmarks_in_boxes(img, tight)])
        return self._faces(face_boxes, scores, img, tight, pose)
