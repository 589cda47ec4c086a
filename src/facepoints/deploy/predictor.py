"""Production inference: image -> faces -> landmarks in original image coordinates.

    predictor = facepoints.load()                 # bundled model, YuNet detector
    faces = predictor.predict("photo.jpg")        # or an RGB uint8 array
    # [{"box": [x0, y0, x1, y1], "score": 0.98, "landmarks": [[x, y], ...]}, ...]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facepoints.data.crops import crop_matrix, invert, square_from_box, transform_points, warp
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.deploy.runtime import TorchRunner, load_runner
from facepoints.models.package import ModelInfo


class Predictor:
    """A landmark model plus a face detector.

    ``refine``: after landmarks are found from a detector box, crop again around those
    landmarks and predict once more, this many times. It makes the result independent
    of how a detector draws its boxes, at the cost of one more network pass.

    ``flip``: also run the mirrored crop and average the two (re-indexed through the
    scheme): test-time augmentation, twice the network cost. ``None``: what the model
    file recommends (``info.recipe["inference"]["flip"]``, chosen on validation data).

    ``detect_size``: the detector sees the image downscaled to this longest side (the
    detector's own default, 960, when None): smaller is faster and misses small faces
    (``benchmarks/detectors.md`` measures both).

    ``model``: a PyTorch module, or any backend callable ``run(batch) -> landmarks``
    (float32 ``(B, 3, S, S)`` in [0, 1] -> ``(B, P, 2)`` crop units), e.g.
    :class:`facepoints.deploy.runtime.OnnxRunner`.
    """

    def __init__(self, model, info: ModelInfo, detector: str | object | None = "yunet",
                 device: str = "cpu", refine: int = 1, threads: int | None = None, flip: bool | None = None,
                 detect_size: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, torch.nn.Module):
            self.model = model.to(device).eval()
            self.run = TorchRunner(self.model, device)
        else:
            self.model, self.run = None, model
        self.info = info
        self.scheme = info.landmark_scheme
        self.device = device
        self.refine = refine
        if flip is None:
            flip = bool(info.recipe.get("inference", {}).get("flip", False))
        self.flip = flip and self.scheme.has_flip
        self._detector_spec = detector
        self.detect_size = detect_size
        self._detector = None if isinstance(detector, (str, type(None))) else detector
        if detect_size is not None and self._detector is not None:
            raise ValueError("detect_size applies to a detector given by name; set the max_side of a detector object")

    @classmethod
    def from_file(cls, path: str | Path | None = None, **kw) -> "Predictor":
        """A facepoints ``.safetensors`` model or an exported ``.onnx`` file. Both run
        on ONNX Runtime on the CPU (``threads`` intra-op threads, 1 by default; a
        ``.safetensors`` file through its cached export), unless ``runtime="torch"``
        (or ``device="cuda"``) keeps a ``.safetensors`` model in PyTorch."""
        run, info = load_runner(path, device=kw.get("device", "cpu"), threads=kw.get("threads"),
                                runtime=kw.pop("runtime", "auto"))
        return cls(run.model if isinstance(run, TorchRunner) else run, info, **kw)

    @property
    def detector(self):
        if self._detector is None:
            if self._detector_spec is None:
                raise ValueError("this predictor has no face detector; pass boxes to predict()")
            from facepoints.deploy.detectors import get_detector

            kw = {} if self.detect_size is None else {"max_side": int(self.detect_size)}
            self._detector = get_detector(self._detector_spec, **kw)
        return self._detector

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

    @torch.no_grad()
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

    def predict(self, image, boxes=None) -> list[dict]:
        """Faces in ``image`` (a path, or an RGB uint8 array) with their landmarks.

        Without ``boxes`` the detector finds every face. ``boxes`` ``(K, 4)``
        ``x0, y0, x1, y1`` are taken as tight boxes around each face's landmarks (as a
        ground-truth box is) and used as they are, without refinement.
        """
        img = read_image(image) if isinstance(image, (str, Path, bytes)) else np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            pts = self.landmarks_in_boxes(img, boxes)
            return [_face(b, None, p) for b, p in zip(boxes, pts)]
        det = self.detector.detect(img)
        if len(det) == 0:
            return []
        pts = self.landmarks_in_boxes(img, self.detector.to_landmark_box(det.boxes))
        for _ in range(self.refine):
            pts = self.landmarks_in_boxes(img, np.stack([landmark_box(p) for p in pts]))
        return [_face(b, s, p) for b, s, p in zip(det.boxes, det.scores, pts)]


def _face(box, score, points) -> dict:
    return {
        "box": [round(float(v), 2) for v in box],
        "score": None if score is None else round(float(score), 4),
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in points],
    }
