"""Face detectors that give the landmark model its crop box at inference time.

At training time the crop comes from the ground-truth landmarks: the tight box of
the 68 points, squared and scaled by ``crop_scale``. At inference there are no
landmarks, so a face detector proposes the box and ``to_landmark_box`` maps it to
the tight-landmark-box convention the model was trained on (each detector draws its
boxes differently: YuNet includes the forehead, dlib's HOG box stops at the brows, ...).

Every detector works offline with weights shipped inside a PyPI package:

========== ============================== ==========================================
name       class                          package
========== ============================== ==========================================
yunet      :class:`YuNetDetector`         OpenCV Zoo's YuNet (MIT) in ``facepoints/weights``,
                                          run by ``cv2.FaceDetectorYN``; default
blazeface  :class:`BlazeFaceDetector`     MediaPipe's short-range BlazeFace as ONNX,
                                          shipped in ``facepoints/weights`` (Apache 2.0)
dlib-hog   :class:`DlibHogDetector`       ``dlib-bin`` (optional, lazy import)
haar       :class:`HaarDetector`          OpenCV's bundled Haar cascades
========== ============================== ==========================================

Images are RGB uint8 ``(H, W, 3)`` arrays, as :func:`facepoints.data.images.read_image`
returns them. Boxes are float32 ``x0, y0, x1, y1`` in image pixels (``x1``/``y1``
exclusive, i.e. ``x1 - x0`` is the width) and may reach outside the image for faces
cut by its border.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Protocol, runtime_checkable

import cv2
import numpy as np

from facepoints.data.calibration import DETECTOR_CALIBRATIONS, BoxCalibration
from facepoints.data.crops import box_iou
from facepoints.errors import MissingDependency, UsageError

__all__ = [
    "BlazeFaceDetector",
    "BoxCalibration",
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "Detections",
    "DlibHogDetector",
    "FaceDetector",
    "HaarDetector",
    "YuNetDetector",
    "get_detector",
]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best first.

    ``boxes``: ``(K, 4)`` float32 ``x0, y0, x1, y1`` in image pixels, in the
    detector's own convention (see :meth:`FaceDetector.to_landmark_box`).
    ``scores``: ``(K,)`` float32 in 0..1, sorted descending.
    ``keypoints``: ``(K, N, 2)`` float32 when the detector gives them, else ``None``
    (YuNet: 5, eyes, nose tip, mouth corners; BlazeFace: 6, eyes, nose tip, mouth
    centre, ear tragions; each as the detector orders them).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        kps = self.keypoints
        if kps is not None:
            kps = np.asarray(kps, dtype=np.float32)
            kps = kps.reshape(len(boxes), -1, 2) if len(boxes) else np.zeros((0, 5, 2), np.float32)
        order = np.argsort(-scores, kind="stable")
        object.__setattr__(self, "boxes", boxes[order])
        object.__setattr__(self, "scores", np.clip(scores[order], 0.0, 1.0))
        object.__setattr__(self, "keypoints", None if kps is None else kps[order])

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


# ----------------------------------------------------------------------- calibration


# ------------------------------------------------------------------------ interface


@runtime_checkable
class FaceDetector(Protocol):
    """What the inference pipeline needs from a face detector."""

    name: str

    def detect(self, image_rgb: np.ndarray) -> Detections:
        """Faces in an RGB uint8 ``(H, W, 3)`` image, best first."""
        ...

    def to_landmark_box(self, boxes: np.ndarray) -> np.ndarray:
        """Map this detector's boxes (``(K, 4)`` or ``(4,)``) to tight 68-landmark boxes."""
        ...


# -------------------------------------------------------------------------- helpers


def check_image(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` array (a 2-D grey image is expanded)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"image of shape {img.shape} is too small")
    return img


def downscale(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``img`` resized down to ``w`` x ``h``: halved by ``cv2.pyrDown`` (a Gaussian
    pyramid step, the anti-aliasing) while that stays above the target, then bilinear.
    As accurate for detection as ``INTER_AREA`` on the 300-W photos and about 1 ms
    faster per photo at 128-160 px (``benchmarks/whole_image.md``)."""
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        img = cv2.pyrDown(img)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def work_scale(h: int, w: int, max_side: int | None, pad: float = 0.0) -> float:
    """Downscale factor (<= 1) so that the image, once padded by ``pad`` times its
    longer side on every edge, has no side over ``max_side``."""
    if not max_side:
        return 1.0
    return min(1.0, max_side / ((1.0 + 2.0 * pad) * max(h, w)))


def pad_pixels(h: int, w: int, pad: float) -> int:
    """Border width in pixels for a ``pad`` fraction of the longer side."""
    return int(math.ceil(pad * max(h, w))) if pad > 0 else 0


def pad_image(image: np.ndarray, px: int) -> np.ndarray:
    """Border of ``px`` replicated edge pixels on every side: a face cut by the
    border then still gets a box reaching outside the image (negative coordinates
    after :func:`unmap_boxes`) instead of one clipped at the edge."""
    if px <= 0:
        return image
    return cv2.copyMakeBorder(image, px, px, px, px, cv2.BORDER_REPLICATE)


def unmap_boxes(boxes: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Boxes found in a padded (by ``offset`` px) and scaled (by ``scale``) image,
    back in the original image's pixels."""
    return ((np.asarray(boxes, np.float64) - offset) / scale).astype(np.float32)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1).astype(np.float32)


def touches_border(boxes: np.ndarray, h: int, w: int, margin: float = 1.0) -> bool:
    """Whether any box reaches within ``margin`` px of the image edge."""
    b = np.asarray(boxes).reshape(-1, 4)
    if not len(b):
        return False
    return bool(np.any((b[:, 0] <= margin) | (b[:, 1] <= margin) | (b[:, 2] >= w - margin) | (b[:, 3] >= h - margin)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


# ---------------------------------------------------------------------- base class


class _Detector:
    """Shared plumbing: image checks, downscaling, optional border padding, mapping
    boxes back, calibration. Subclasses implement :meth:`_raw` on the work image."""

    name: ClassVar[str]
    #: Tight-68-landmark-box calibration; measured by ``benchmarks/detectors.py``.
    calibration: ClassVar[BoxCalibration] = BoxCalibration()

    def __init__(self, max_side: int | None = 960, pad: float = 0.0, pad_mode: str = "auto"):
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if pad_mode not in ("auto", "always"):
            raise ValueError(f"pad_mode must be 'auto' or 'always', got {pad_mode!r}")
        self.max_side = max_side
        self.pad = float(pad)
        self.pad_mode = pad_mode

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def _raw(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(boxes xyxy, scores 0..1, keypoints or None)`` in ``image_rgb``'s pixels."""
        raise NotImplementedError

    def _run(self, img: np.ndarray, pad: float) -> Detections:
        h, w = img.shape[:2]
        s = work_scale(h, w, self.max_side, pad)
        work = img
        if s < 1.0:
            work = downscale(img, max(1, round(w * s)), max(1, round(h * s)))
        px = pad_pixels(*work.shape[:2], pad)
        boxes, scores, kps = self._raw(pad_image(work, px))
        boxes = unmap_boxes(boxes, px, s)
        if kps is not None:
            kps = unmap_boxes(kps, px, s)
        return Detections(boxes, scores, kps)

    def detect(self, image_rgb: np.ndarray) -> Detections:
        img = check_image(image_rgb)
        if self.pad > 0 and self.pad_mode == "always":
            return self._run(img, self.pad)
        dets = self._run(img, 0.0)
        # A face cut by the border gets a box clipped at (or, for YuNet, a pixel or two
        # short of) the edge; only then pay for a second pass on the padded image, which
        # lets the box reach outside.
        h, w = img.shape[:2]
        if self.pad > 0 and touches_border(dets.boxes, h, w, margin=max(1.0, 0.01 * max(h, w))):
            dets = self._run(img, self.pad)
        return dets

    def to_landmark_box(self, boxes: np.ndarray) -> np.ndarray:
        return self.calibration.apply(boxes)


# ------------------------------------------------------------------------ detectors


class YuNetDetector(_Detector):
    """YuNet (OpenCV Zoo's face detector, MIT; ``weights/yunet.onnx``): a small CNN, fast
    on CPU, robust to pose, gives 5 keypoints. ``runtime``: ``onnxruntime`` (default: the
    network on ONNX Runtime and OpenCV's decoding and NMS redone in NumPy: on 200 300-W
    photos the same faces as ``cv2.FaceDetectorYN``, every number within 0.0001 px, in
    5.96 against 11.36 ms per photo on one thread) or ``opencv`` (``cv2.FaceDetectorYN``).
    (It replaced the ``yuface`` wheel's build of the same network on 2026-12-06: on 1,352
    annotated faces it lost none that wheel found and found one more; its boxes matched
    with IoU 0.98 and corners within 1 % of the face width, so the box calibrations carry
    over; it is faster and, unlike that wheel, does not leak memory per call.)

    ``score_threshold``: minimum confidence in 0..1. ``max_side``: images are
    downscaled to fit (960 by default). ``pad``: border, as a fraction of the longer side,
    added before detecting when a face touches the edge (see ``pad_mode``), so boxes of
    faces cut by the border are not clipped. ``threads``: OpenCV's threads (1; None
    leaves OpenCV's default).
    """

    name = "yunet"
    # Measured by `python benchmarks/detectors.py` on 300-W AFW with default settings:
    # for each face, the detection containing the centre of the tight 68-landmark box
    # with the highest IoU (337 of 337 faces); median of the per-face ratios.
    # HELEN (held out) mean IoU 0.71 raw -> 0.88 calibrated. See benchmarks/detectors.md.
    calibration = DETECTOR_CALIBRATIONS["yunet"]
    weights = Path(__file__).resolve().parents[1] / "weights" / "yunet.onnx"

    NMS_THRESHOLD, TOP_K, STRIDES = 0.3, 5000, (8, 16, 32)

    def __init__(self, score_threshold: float = 0.5, max_side: int | None = 960, pad: float = 0.25,
                 pad_mode: str = "auto", threads: int | None = 1, runtime: str = "onnxruntime"):
        super().__init__(max_side=max_side, pad=pad, pad_mode=pad_mode)
        import cv2

        if not self.weights.is_file():
            raise FileNotFoundError(f"{self.weights}: the YuNet face detector's weights are missing from the package")
        if runtime not in ("onnxruntime", "opencv"):
            raise ValueError(f"YuNet runtime {runtime!r}: choose onnxruntime or opencv")
        self.score_threshold = float(score_threshold)
        self.threads, self.runtime = threads, runtime
        if runtime == "opencv":
            if threads:
                cv2.setNumThreads(int(threads))
            self._net = cv2.FaceDetectorYN.create(str(self.weights), "", (320, 320), self.score_threshold,
                                                  self.NMS_THRESHOLD, self.TOP_K)
            self._lock = threading.Lock()  # one network, its input size set per image: one image at a time
        else:
            from facepoints.inference.runtime import OnnxRunner  # ONNX Runtime, imported late

            onnx = OnnxRunner(self.weights, threads=threads)  # the session (YuNet has twelve outputs), as BlazeFace's
            self._session, self._input, self._outputs = onnx.session, onnx.input_name, onnx.output_names

    def _raw(self, image_rgb):
        if self.runtime == "onnxruntime":
            return self._raw_ort(image_rgb)
        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
        with self._lock:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self._net.detect(bgr)
        if faces is None or not len(faces):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        boxes = faces[:, :4].astype(np.float64)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x0, y0, x1, y1
        return boxes.astype(np.float32), faces[:, 14].astype(np.float32), faces[:, 4:14].reshape(-1, 5, 2).astype(np.float32)

    def _raw_ort(self, image_rgb):
        """What ``cv2.FaceDetectorYN`` does (OpenCV's objdetect/face_detect.cpp): the BGR
        image, 0-255, padded at the bottom and right to multiples of 32; per stride and
        grid cell a score sqrt(cls * obj) (each clipped to 0..1), a box centred at
        (cell + offset) * stride of size exp(log size) * stride, five keypoints at
        (cell + offset) * stride; OpenCV's NMS on the integer boxes."""
        import cv2

        h, w = image_rgb.shape[:2]
        ph, pw = ((h - 1) // 32 + 1) * 32, ((w - 1) // 32 + 1) * 32
        blob = np.empty((1, 3, ph, pw), np.float32)
        blob[0, :, h:], blob[0, :, :h, w:] = 0, 0
        for c, plane in enumerate(cv2.split(image_rgb)[::-1]):  # BGR planes: a third faster than a strided copy
            blob[0, c, :h, :w] = plane
        out = dict(zip(self._outputs, self._session.run(None, {self._input: blob})))
        boxes, scores, kps = [], [], []
        for st in self.STRIDES:
            cols = pw // st
            score = np.sqrt(np.clip(out[f"cls_{st}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{st}"][0, :, 0], 0, 1))
            idx = np.flatnonzero(score >= self.score_threshold)
            if not len(idx):
                continue
            r, c = idx // cols, idx % cols
            bb, kp = out[f"bbox_{st}"][0, idx], out[f"kps_{st}"][0, idx]
            bw, bh = np.exp(bb[:, 2]) * st, np.exp(bb[:, 3]) * st
            cx, cy = (c + bb[:, 0]) * st, (r + bb[:, 1]) * st
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            scores.append(score[idx])
            kps.append(np.stack([(kp[:, 0::2] + c[:, None]) * st, (kp[:, 1::2] + r[:, None]) * st], -1))
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, scores, kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        rects = [[int(x0), int(y0), int(x1 - x0), int(y1 - y0)] for x0, y0, x1, y1 in boxes]  # OpenCV's Rect2i
        keep = np.asarray(cv2.dnn.NMSBoxes(rects, scores.tolist(), self.score_threshold, self.NMS_THRESHOLD,
                                           top_k=self.TOP_K), int).reshape(-1)
        return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), kps[keep].astype(np.float32)


def blazeface_anchors(size: int = 128, strides=(8, 16, 16, 16), per_layer: int = 2) -> np.ndarray:
    """Anchor centres ``(N, 2)`` in 0..1 of MediaPipe's SSD anchor generator as the
    short-range face detector configures it (fixed anchor size, offset 0.5; layers of
    one stride share their grid): 16 x 16 x 2 + 8 x 8 x 6 = 896 for 128 px."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(grid, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou: float) -> tuple:
    """MediaPipe's WEIGHTED non-maximum suppression: the best remaining box takes every
    box overlapping it by more than ``iou`` (itself included) and becomes their
    score-weighted mean (its keypoints too), keeping the best score."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, points = boxes[order], scores[order], points[order]
    keep_b, keep_s, keep_p = [], [], []
    left = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not left[i]:
            continue
        group = left & (box_iou(boxes, boxes[i]) > iou)
        group[i] = True
        wgt = scores[group] / scores[group].sum()
        keep_b.append(wgt @ boxes[group])
        keep_p.append(np.tensordot(wgt, points[group], 1))
        keep_s.append(scores[i])
        left &= ~group
    if not keep_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0,) + points.shape[1:], np.float32)
    return np.stack(keep_b), np.asarray(keep_s, np.float32), np.stack(keep_p)


class BlazeFaceDetector(_Detector):
    """MediaPipe's short-range BlazeFace (Bazarevsky et al. 2019, arXiv 1907.05047), the
    detector in front of MediaPipe Face Mesh, converted to ONNX
    (``tools/convert_blazeface.py``) and run by ONNX Runtime: 128 x 128 input, faces
    within about 2 m of the camera (about a fifth of the image side and up). Decoded as
    MediaPipe does: 896 anchors, sigmoid scores, weighted NMS at IoU 0.3.

    ``max_side``: the image is downscaled to fit before being letterboxed (zero border)
    into the 128 px square; the default, 128, is the network's own input.
    ``score_threshold``: MediaPipe's ``min_detection_confidence`` (0.5).
    ``threads``: ONNX Runtime intra-op threads (1).
    """

    name = "blazeface"
    SIZE = 128
    # Measured by `python benchmarks/detectors.py` on 300-W AFW, as for YuNet.
    calibration = DETECTOR_CALIBRATIONS["blazeface"]

    def __init__(self, score_threshold: float = 0.5, max_side: int | None = 128, pad: float = 0.0,
                 pad_mode: str = "auto", threads: int | None = 1, nms_iou: float = 0.3):
        super().__init__(max_side=max_side, pad=pad, pad_mode=pad_mode)
        from facepoints.inference.runtime import OnnxRunner  # ONNX Runtime, imported late

        path = Path(__file__).resolve().parents[1] / "weights" / "blazeface_short_range.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the BlazeFace detector's ONNX file is missing "
                                    "(made by tools/convert_blazeface.py)")
        self._session = OnnxRunner(path, threads=threads).session  # the session: BlazeFace has two outputs
        self._anchors = blazeface_anchors(self.SIZE)
        self.score_threshold = float(score_threshold)
        self.threads = threads
        self.nms_iou = float(nms_iou)

    def _raw(self, image_rgb):
        s = self.SIZE
        h, w = image_rgb.shape[:2]
        k = s / max(h, w)
        img, size = image_rgb, (max(1, round(w * k)), max(1, round(h * k)))
        if k < 1:
            img = downscale(img, *size)
        elif k > 1:
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        nh, nw = img.shape[:2]
        top, left = (s - nh) // 2, (s - nw) // 2
        square = np.zeros((s, s, 3), np.uint8)
        square[top:top + nh, left:left + nw] = img
        x = square.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(2 / 255) - np.float32(1)
        reg, cls = self._session.run(None, {"input": x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(cls.reshape(-1).astype(np.float64), -100, 100)))
        keep = scores >= self.score_threshold
        reg, a = reg.reshape(-1, 16)[keep].astype(np.float64) / s, self._anchors[keep]
        cx, cy = reg[:, 0] + a[:, 0], reg[:, 1] + a[:, 1]
        boxes = np.stack([cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, cx + reg[:, 2] / 2, cy + reg[:, 3] / 2], 1)
        points = reg[:, 4:].reshape(-1, 6, 2) + a[:, None, :]
        boxes, scores, points = weighted_nms(boxes, scores[keep], points, self.nms_iou)
        # 0..1 of the letterboxed square -> pixels of image_rgb
        off, f = np.array([left, top], np.float64), max(h, w) / s
        boxes = ((boxes.reshape(-1, 2, 2) * s - off) * f).reshape(-1, 4)
        points = (points * s - off) * f
        return boxes.astype(np.float32), scores.astype(np.float32), points.astype(np.float32)


class DlibHogDetector(_Detector):
    """dlib's HOG + linear SVM frontal face detector (weights built into dlib).

    ``upsample``: times the image is doubled before scanning (finds faces down to
    about 40 px at 1, 80 px at 0). ``threshold``: SVM margin to accept (0 is dlib's
    default). Scores are the sigmoid of the margin, so 0.5 at the default threshold.
    """

    name = "dlib-hog"
    # Measured by `python benchmarks/detectors.py` on 300-W AFW, as for YuNet
    # (314 of 337 faces matched); HELEN mean IoU 0.72 raw -> 0.76 calibrated.
    calibration = DETECTOR_CALIBRATIONS["dlib-hog"]

    def __init__(self, upsample: int = 1, threshold: float = 0.0, max_side: int | None = 960, pad: float = 0.0,
                 pad_mode: str = "auto"):
        super().__init__(max_side=max_side, pad=pad, pad_mode=pad_mode)
        try:
            import dlib
        except ImportError:
            raise MissingDependency(
                "the 'dlib-hog' face detector needs dlib: pip install dlib-bin "
                "(or pip install 'facepoints[dlib]')"
            ) from None
        self._hog = dlib.get_frontal_face_detector()
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def _raw(self, image_rgb):
        rects, margins, _ = self._hog.run(np.ascontiguousarray(image_rgb), self.upsample, self.threshold)
        # dlib rectangles are inclusive: right/bottom are the last pixel inside.
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        return boxes.reshape(-1, 4), _sigmoid(margins).astype(np.float32), None


class HaarDetector(_Detector):
    """OpenCV's Viola-Jones Haar cascade (``haarcascade_frontalface_alt2.xml`` by
    default, shipped in ``cv2.data.haarcascades``). Frontal faces only.

    Scores are ``n / (n + 10)`` with ``n`` the number of merged neighbour windows:
    monotone in the cascade's support, not a probability.
    """

    name = "haar"
    # Measured by `python benchmarks/detectors.py` on 300-W AFW, as for YuNet
    # (287 of 337 faces matched); HELEN mean IoU 0.61 raw -> 0.78 calibrated.
    calibration = DETECTOR_CALIBRATIONS["haar"]

    def __init__(self, cascade: str = "haarcascade_frontalface_alt2.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 3, min_size: int = 24, max_side: int | None = 960, pad: float = 0.0,
                 pad_mode: str = "auto"):
        super().__init__(max_side=max_side, pad=pad, pad_mode=pad_mode)
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        clf = cv2.CascadeClassifier(str(path))
        if clf.empty():
            raise FileNotFoundError(f"cannot load Haar cascade {cascade!r} (looked in {cv2.data.haarcascades})")
        self._clf = clf
        self.cascade = cascade
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)

    def _raw(self, image_rgb):
        grey = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
        rects, counts = self._clf.detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size))
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        n = np.asarray(counts, np.float32).reshape(-1)
        return xywh_to_xyxy(rects), n / (n + 10.0), None


# ------------------------------------------------------------------------- registry

DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    YuNetDetector.name: YuNetDetector,
    BlazeFaceDetector.name: BlazeFaceDetector,
    DlibHogDetector.name: DlibHogDetector,
    HaarDetector.name: HaarDetector,
}
DEFAULT_DETECTOR = YuNetDetector.name


def get_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> FaceDetector:
    """A detector by registry name; keyword arguments go to its constructor."""
    key = name.strip().lower()
    if key not in DETECTORS:
        raise UsageError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    return DETECTORS[key](**kwargs)
