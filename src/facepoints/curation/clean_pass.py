"""The cleaning checks' reads of the images: one pass that decodes each image once for
its size, the face detector's box and the model's prediction, and out-of-fold
predictions (each sample predicted by a model that never saw it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from facepoints.data.crops import box_iou
from facepoints.data.images import ImageError, image_size, read_image
from facepoints.data.samples import Dataset, landmark_box
from facepoints.data.splits import group_hash


@dataclass
class ImagePass:
    """What one pass over a dataset's images found, per sample: ``sizes`` (S, 2) width
    and height (NaN where unreadable), ``errors`` (why an image could not be read, or
    None), ``detections`` (S, 4) the matched face box (:func:`match_detection`; NaN
    where none, or None without a detector), ``predictions`` (S, N, 2) (NaN where none,
    or None without a model), ``radii`` (S, N) the model's 90 % error radius per point in
    pixels (a trust model; None otherwise)."""

    sizes: np.ndarray
    errors: list
    detections: np.ndarray | None = None
    predictions: np.ndarray | None = None
    radii: np.ndarray | None = None


def image_pass(ds: Dataset, predictor=None, detector=None, refine: int = 2, usable: np.ndarray | None = None,
               progress: bool = False, min_iou: float = 0.1, start_boxes: np.ndarray | None = None) -> ImagePass:
    """Decode each image once (only its header when neither ``predictor`` nor
    ``detector`` needs the pixels): its size; with ``detector``, the detection matched
    to the labels; with ``predictor``, the model's landmarks for the usable samples
    (``usable``; all by default), re-cropped ``refine`` times around its own answer.
    The model's first crop comes from ``start_boxes`` (S, 4) or else the detection,
    where finite, and from the labels' box otherwise: a weak model started from a
    wrong crop (the labels may be the error being looked for) tends to follow it."""
    if predictor is not None and predictor.scheme.num_points != ds.scheme.num_points:
        raise ValueError(f"the model predicts {predictor.scheme.num_points} points, dataset {ds.name!r} "
                         f"has {ds.scheme.num_points}; use a model of this scheme or --no-model")
    n = len(ds)
    out = ImagePass(np.full((n, 2), np.nan), [None] * n,
                    None if detector is None else np.full((n, 4), np.nan),
                    None if predictor is None else np.full((n, ds.scheme.num_points, 2), np.nan))
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="images", unit="image", leave=False)
    for i in it:
        s = ds.samples[i]
        if detector is None and predictor is None:
            try:
                out.sizes[i] = image_size(s.image)
            except ImageError as e:
                out.errors[i] = str(e)
            continue
        try:
            img = read_image(s.image)
        except ImageError as e:
            out.errors[i] = str(e)
            continue
        out.sizes[i] = img.shape[1], img.shape[0]
        if not np.isfinite(s.landmarks).all():
            continue
        if detector is not None:
            out.detections[i] = match_detection(img, s.landmarks, detector, min_iou)
        if predictor is not None and (usable is None or usable[i]):
            start = landmark_box(s.landmarks)
            given = start_boxes if start_boxes is not None else out.detections
            if given is not None and np.isfinite(given[i]).all():
                start = given[i]
            box = np.asarray(start, np.float64)
            for _ in range(refine):
                box = landmark_box(predictor.landmarks_in_boxes(img, box[None])[0])
            # the last pass with the trust outputs, where the model has them
            pts, radius, _ = (predictor.faces_in_boxes(img, box[None]) if hasattr(predictor, "faces_in_boxes")
                              else (predictor.landmarks_in_boxes(img, box[None]), None, None))
            out.predictions[i] = pts[0]
            if radius is not None:
                if out.radii is None:
                    out.radii = np.full((n, ds.scheme.num_points), np.nan)
                out.radii[i] = radius[0]
    return out


def match_detection(img: np.ndarray, landmarks: np.ndarray, detector, min_iou: float = 0.1) -> np.ndarray:
    """The landmark-convention box (``detector.to_landmark_box``) of the detection that
    overlaps the labels' box most (IoU >= ``min_iou``), or NaN. Independent of the
    labels' size and place, so it both starts the model's crops and is a check of its
    own (``detector_*``)."""
    det = detector.detect(img)
    if len(det) == 0:
        return np.full(4, np.nan)
    boxes = np.asarray(detector.to_landmark_box(det.boxes), np.float64).reshape(-1, 4)
    iou = box_iou(boxes, landmark_box(landmarks))
    return boxes[int(np.argmax(iou))] if iou.max() >= min_iou else np.full(4, np.nan)


def model_predictions(ds: Dataset, predictor, refine: int = 2, usable: np.ndarray | None = None,
                      progress: bool = False, start_boxes: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Predictions (S, N, 2) (:func:`image_pass`); NaN where a sample is not usable or
    its image cannot be read (listed in the second return value)."""
    got = image_pass(ds, predictor, refine=refine, usable=usable, progress=progress, start_boxes=start_boxes)
    return got.predictions, [e for k, e in enumerate(got.errors) if e and (usable is None or usable[k])]


def matched_detections(ds: Dataset, detector, min_iou: float = 0.1, progress: bool = False) -> np.ndarray:
    """(S, 4) each sample's :func:`match_detection` (NaN where none or unreadable)."""
    return image_pass(ds, detector=detector, progress=progress, min_iou=min_iou).detections


def out_of_fold_predictions(ds: Dataset, make_predictor: Callable[[Dataset], object], k: int = 5,
                            seed: int = 0, refine: int = 2, progress: bool = False,
                            start_boxes: np.ndarray | None = None) -> np.ndarray:
    """Predictions (S, N, 2) where each sample's comes from a model that never saw it.

    The samples are split into ``k`` folds by ``Sample.group`` (faces of one photo or
    one person stay together); ``make_predictor(train_dataset)`` must train a model on
    the other folds and return a ``Predictor``. Pass the result to
    ``score_dataset(..., predictions=...)``. Training k models is expensive: this is
    a hook, ``facepoints clean`` does not call it."""
    folds = np.array([group_hash(s.group, seed) % k for s in ds.samples])
    out = np.full((len(ds), ds.scheme.num_points, 2), np.nan)
    for f in range(k):
        test = np.flatnonzero(folds == f)
        if not len(test):
            continue
        predictor = make_predictor(ds.subset(np.flatnonzero(folds != f), name=f"{ds.name} (fold {f} out)"))
        pred, _ = model_predictions(ds.subset(test), predictor, refine=refine, progress=progress,
                                    start_boxes=None if start_boxes is None else start_boxes[test])
        out[test] = pred
    return out
