"""Landmarks on video: follow each face from frame to frame and smooth its points.

    from facepoints.inference.tracking import Tracker, read_video
    fps, frames = read_video("clip.mp4")
    tracker = Tracker(facepoints.load(), fps=fps)
    for frame in frames:                            # RGB uint8
        for face in tracker.update(frame):          # TrackedFace: track_id, box, landmarks
            ...

How a frame is processed (:meth:`Tracker.update`):

* **tracking**: each face's crop box is the tight box of its landmarks in the previous
  frame (:func:`facepoints.data.samples.landmark_box`, the box convention
  :meth:`Predictor.landmarks_in_boxes` takes and the model was trained on), so the
  landmark model itself follows the face; no detector runs. The model gives no
  confidence of its own, so each new shape is checked for plausibility: finite, at
  least ``min_face`` px, between 0.6 and 1 / 0.6 times its size in the previous frame,
  IoU >= ``min_iou`` with the previous box, and at least 40 % of its box inside the
  frame; with a trust model also its ``quality`` at least ``min_quality`` (the model
  says it is unsure: the face turned, was covered or slipped out of the crop). A face
  failing the check is *lost*.
* **detection**: on the first frame, every ``detect_every`` frames after the last
  detection, and at once when a face is lost or no face is being tracked, the full
  :meth:`Predictor.predict` (detector, landmarks, refinement) runs. Detections are
  associated with the tracks by IoU of landmark boxes (greedy, best pair first, at
  least ``iou_threshold``): a matched track takes the detection's landmarks and keeps
  its id (so a lost face the detector finds again keeps its id); a new face starts a
  track with a new id. A track the detector does not find goes on from its previous
  landmarks if plausible, and the detector is asked again on the next frame; a track
  lost and not found, or missed ``max_misses + 1`` times in a row, ends. Of two tracks
  that end up on one face (IoU > 0.5), the younger ends.
* **smoothing**: each track has its own :class:`OneEuroFilter` over all its points;
  with a trust model a point whose error radius is above the face's median is smoothed
  more (its cutoff scaled by median / radius, at least a quarter).
  The raw (unsmoothed) landmarks, not the smoothed ones, make the next crop, so
  smoothing never feeds back into what the model sees; ``TrackedFace.raw`` keeps them.

:func:`jitter` measures frame-to-frame shake; ``benchmarks/tracking.py`` reports it
with and without smoothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facepoints.data.crops import box_iou
from facepoints.data.samples import landmark_box
from facepoints.data.video import VideoError, read_video  # noqa: F401  (the tracker's input, re-exported)
from facepoints.inference.predictor import Face, face_pose

# Defaults chosen with benchmarks/tracking.py (still and slowly moving faces, 30 fps).
MIN_CUTOFF = 0.5  # Hz
BETA = 30.0  # per (face size / s): the cutoff rises by BETA Hz at one face size per second
D_CUTOFF = 1.0  # Hz
# A followed face whose quality (Face.quality: 0.5 for the median held-out face, halving for
# each further median-sized error radius) is below this counts as lost: re-detect. Chosen on
# AFLW2000-3D's dev half (validation; a third of it, GT boxes, bundled default): 4.8 % of the
# faces fall below 0.2, and 81 % of those are failures (NME > 8 % of the box) against 5 % of
# all faces; below 0.3 would take 9.3 %, half of them failures.
MIN_QUALITY = 0.2


# ------------------------------------------------------------------ One Euro filter


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel and Vogel, CHI 2012): a first-order low-pass
    whose cutoff rises with speed, so a still signal is smoothed hard and a moving one
    follows with little lag.

    For each sample ``x`` (any array shape; every element is filtered on its own, as the
    paper treats a multi-dimensional signal), with the time step ``te = 1 / fps``::

        alpha(fc) = r / (r + 1),  r = 2 pi fc te
        dx   = (x - x_prev) / te                      x_prev: previous filtered value
        edx  = edx_prev + alpha(d_cutoff) (dx - edx_prev)
        fc   = min_cutoff + beta |edx| / scale
        x_f  = x_prev + alpha(fc) (x - x_prev)

    The first sample passes unchanged (``edx`` starts at 0). ``scale`` (per call) is the
    unit of speed for ``beta``: the tracker passes the face size in pixels, so ``beta``
    means the same for a small and a large face.
    """

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF,
                 fps: float = 30.0):
        for name, v in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff), ("fps", fps)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.te = 1.0 / float(fps)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def alpha(cutoff, te: float):
        r = 2 * math.pi * np.asarray(cutoff, np.float64) * te
        return r / (r + 1)

    def reset(self) -> None:
        self.x = self.dx = None

    def __call__(self, x, scale: float = 1.0, trust=None) -> np.ndarray:
        """The filtered sample. ``trust`` (optional, broadcast against ``x``, 0-1): how
        far to trust each element; its cutoffs are multiplied by it, so a less-trusted
        element is smoothed more."""
        x = np.asarray(x, np.float64)
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) / self.te
        self.dx = self.dx + self.alpha(self.d_cutoff, self.te) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx) / max(float(scale), 1e-9)
        if trust is not None:
            cutoff = cutoff * np.asarray(trust, np.float64)
        self.x = self.x + self.alpha(cutoff, self.te) * (x - self.x)
        return self.x.copy()


# -------------------------------------------------------------------------- jitter


def jitter(points_per_frame, scheme="ibug68", normalise: bool = True) -> float:
    """Mean frame-to-frame displacement of the points of one face over a clip.

    ``points_per_frame``: ``(F, P, 2)``, the face's landmarks in F consecutive frames.
    The mean over frame pairs and points of ``|x[f+1] - x[f]|``, each pair divided by
    its inter-ocular distance (outer eye corners of the scheme, as
    :func:`facepoints.evaluation.metrics.normaliser` measures it, on the mean of the two
    frames): a fraction like NME (0.01 = 1 %). ``normalise=False``: in pixels."""
    from facepoints.evaluation.metrics import normaliser

    p = np.asarray(points_per_frame, np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"points_per_frame must have shape (F, P, 2), got {p.shape}")
    if len(p) < 2:
        raise ValueError("jitter needs at least 2 frames")
    step = np.linalg.norm(p[1:] - p[:-1], axis=-1).mean(axis=1)  # (F-1,)
    if normalise:
        step = step / normaliser((p[1:] + p[:-1]) / 2, scheme, "io")
    return float(step.mean())


# -------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class TrackedFace(Face):
    """One face in one frame: a :class:`~facepoints.inference.predictor.Face` (same
    fields and JSON names: trust and pose where the model has them) with its track.
    ``box``: the tight box of ``landmarks``; ``landmarks``: smoothed (if the tracker
    smooths); ``raw``: the model's own answer this frame; ``detected``: this frame's
    landmarks came from a detection (``score`` is the detector's then)."""

    track_id: int = 0
    raw: np.ndarray | None = None
    detected: bool = False

    def to_dict(self, digits: int = 2) -> dict:
        return {"track_id": self.track_id, **super().to_dict(digits), "detected": bool(self.detected)}


@dataclass
class _Track:
    id: int
    face: Face  # the model's last answer (landmarks, trust); its landmark box is the next crop
    filter: OneEuroFilter | None
    misses: int = 0
    points: np.ndarray | None = None  # smoothed

    @property
    def raw(self) -> np.ndarray:
        return self.face.landmarks

    @property
    def box(self) -> np.ndarray:
        return landmark_box(self.raw)


def _size(box) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


class Tracker:
    """Follow every face of a video with ``predictor`` (a :class:`Predictor` with a
    detector) and smooth its landmarks; see the module docstring for the steps.

    ``update(frame)`` takes consecutive RGB uint8 frames and returns the faces of each
    as :class:`TrackedFace` objects with stable ``track_id``s (1, 2, ... in order of
    appearance). ``detector_calls`` and ``detection_frames`` count the detector runs.
    """

    def __init__(self, predictor, fps: float = 30.0, detect_every: int = 30, smooth: bool = True,
                 min_cutoff: float = MIN_CUTOFF, beta: float = BETA, d_cutoff: float = D_CUTOFF,
                 iou_threshold: float = 0.3, min_iou: float = 0.3, min_face: float = 8.0, max_misses: int = 1,
                 min_quality: float = MIN_QUALITY):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.predictor = predictor
        self.fps, self.detect_every, self.smooth = float(fps), int(detect_every), smooth
        self.filter_args = dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, fps=fps)
        OneEuroFilter(**self.filter_args)  # validate now, not at the first face
        self.iou_threshold, self.min_iou, self.min_face, self.max_misses = iou_threshold, min_iou, min_face, max_misses
        if not 0 <= min_quality <= 1:
            raise ValueError(f"min_quality must be between 0 and 1, got {min_quality}")
        self.min_quality = float(min_quality)
        self.tracks: list[_Track] = []
        self.frame_index = -1
        self.last_detection = None
        self.detector_calls = 0
        self.detection_frames: list[int] = []
        self._next_id = 1
        self._retry = False  # a track was missed by the detector: ask again next frame

    @property
    def tracks_started(self) -> int:
        return self._next_id - 1

    def plausible(self, old_box, points, shape, quality: float | None = None) -> bool:
        """Whether ``points`` (P, 2), found in the crop of ``old_box``, still look like
        the face: not collapsed or exploded, not jumped away, not mostly off-frame, and
        (a trust model's ``quality``) not below ``min_quality``."""
        if not np.isfinite(points).all():
            return False
        if quality is not None and quality < self.min_quality:
            return False
        box = landmark_box(points)
        old, new = _size(old_box), _size(box)
        if new < self.min_face or not (0.6 <= new / max(old, 1e-9) <= 1 / 0.6):
            return False
        if box_iou(box[None], old_box)[0] < self.min_iou:
            return False
        h, w = shape[:2]
        ix = max(0.0, min(box[2], w - 1) - max(box[0], 0))
        iy = max(0.0, min(box[3], h - 1) - max(box[1], 0))
        area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
        return ix * iy / area >= 0.4

    def _follow(self, frame, tracks) -> dict[int, Face]:
        """Faces (landmarks, trust) from each track's previous box, the plausible ones, by id."""
        if not tracks:
            return {}
        boxes = np.stack([t.box for t in tracks])
        faces = self.predictor.predict(frame, landmark_boxes=boxes, pose=False)  # the pose: on the smoothed points
        return {t.id: f for t, b, f in zip(tracks, boxes, faces)
                if self.plausible(b, f.landmarks, frame.shape, f.quality)}

    def update(self, frame: np.ndarray) -> list[TrackedFace]:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        self.frame_index += 1
        k = self.frame_index
        detect = (not self.tracks or self._retry or self.last_detection is None
                  or k - self.last_detection >= self.detect_every)
        followed: dict[int, Face] = {}
        did_follow = not detect
        if did_follow:
            followed = self._follow(frame, self.tracks)
            detect = len(followed) < len(self.tracks)  # a face was lost
        new_raw: dict[int, Face] = {}
        from_detection: set[int] = set()
        born: list[_Track] = []
        if not detect:
            new_raw = followed
        else:
            faces = self.predictor.predict(frame, pose=False)
            self.detector_calls += 1
            self.detection_frames.append(k)
            self.last_detection = k
            det_boxes = [landmark_box(f.landmarks) for f in faces]
            pairs = sorted(((float(box_iou(d[None], t.box)[0]), i, j)
                            for i, t in enumerate(self.tracks) for j, d in enumerate(det_boxes)), reverse=True)
            used_t, used_d = set(), set()
            for iou, i, j in pairs:
                if iou < self.iou_threshold:
                    break
                if i in used_t or j in used_d:
                    continue
                used_t.add(i)
                used_d.add(j)
                t = self.tracks[i]
                new_raw[t.id], t.misses = faces[j], 0
                from_detection.add(t.id)
            missed = [t for i, t in enumerate(self.tracks) if i not in used_t]
            # not found by the detector: go on from the previous landmarks if plausible
            still = followed if did_follow else self._follow(frame, missed)
            for t in missed:
                t.misses += 1
                if t.id in still and t.misses <= self.max_misses:
                    new_raw[t.id] = still[t.id]
            kept_boxes = [landmark_box(f.landmarks) for f in new_raw.values()]
            for j, p in enumerate(faces):
                if j in used_d:
                    continue
                if kept_boxes and box_iou(np.stack(kept_boxes), det_boxes[j]).max() >= self.iou_threshold:
                    continue  # a face already followed (the detector's box moved too much to match)
                t = _Track(self._next_id, p, OneEuroFilter(**self.filter_args) if self.smooth else None)
                self._next_id += 1
                born.append(t)
                new_raw[t.id] = p
                from_detection.add(t.id)
        self.tracks = [t for t in self.tracks if t.id in new_raw] + born
        self._retry = any(t.misses for t in self.tracks)
        # two tracks on one face: the younger ends
        keep: list[_Track] = []
        for t in sorted(self.tracks, key=lambda t: t.id):
            b = landmark_box(new_raw[t.id].landmarks)
            if all(box_iou(landmark_box(new_raw[o.id].landmarks)[None], b)[0] <= 0.5 for o in keep):
                keep.append(t)
        self.tracks = keep
        out = []
        for t in self.tracks:
            t.face = new_raw[t.id]
            raw = np.asarray(t.face.landmarks, np.float32)
            if t.filter is not None:
                t.points = t.filter(raw, scale=max(_size(t.box), 1.0), trust=point_trust(t.face)).astype(np.float32)
            else:
                t.points = raw
            detected = t.id in from_detection
            out.append(TrackedFace(landmark_box(t.points), t.face.score if detected else None, t.points,
                                   t.face.error_radius, t.face.visible, t.face.quality, face_pose(t.points),
                                   track_id=t.id, raw=raw, detected=detected))
        return out


def point_trust(face: Face):
    """(P, 1) how far to trust each point when smoothing: 1 for a point whose error radius
    is at most the face's median, median / radius above it (at least 0.25); None without
    trust outputs."""
    r = face.error_radius
    if r is None or len(r) == 0:
        return None
    r = np.asarray(r, np.float64)
    return np.clip(np.median(r) / np.maximum(r, 1e-9), 0.25, 1.0)[:, None]


def draw_tracks(frame: np.ndarray, faces: list[TrackedFace], scheme=None) -> np.ndarray:
    """A copy of ``frame`` with each face's landmarks and box drawn (as
    :func:`facepoints.data.draw.draw_faces` does) and its track id above the box."""
    from facepoints.data.draw import YELLOW, draw_faces

    out = draw_faces(frame, faces, scheme, scores=False)
    thick = max(1, round(max(out.shape[:2]) / 400))
    for f in faces:
        x0, y0 = int(round(f.box[0])), int(round(f.box[1]))
        cv2.putText(out, f"#{f.track_id}", (x0, max(10, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, YELLOW, thick, cv2.LINE_AA)
    return out
