"""Evaluate a model on an annotated dataset, by the standard protocol.

By default the crop box comes from the ground-truth landmarks (300-W protocol);
``use_detector=True`` runs the face detector instead and matches its faces to the
ground truth, reporting faces it missed separately (they get no NME).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepoints.data.crops import box_iou
from facepoints.data.images import ImageError, read_image
from facepoints.data.samples import Dataset, landmark_box
from facepoints.evaluation.metrics import nme, summary


@dataclass
class Evaluation:
    summary: dict
    ids: list[str]
    predictions: np.ndarray  # (M, P, 2), NaN where nothing was predicted
    errors: np.ndarray  # (M,) NME by the primary normaliser, NaN where missed


def evaluate(ds: Dataset, predictor, use_detector: bool = False, progress: bool = False) -> Evaluation:
    if ds.scheme.num_points != predictor.scheme.num_points:
        raise ValueError(f"dataset {ds.name} has {ds.scheme.num_points} points, model predicts {predictor.scheme.num_points}")
    m, p = len(ds), ds.scheme.num_points
    pred = np.full((m, p, 2), np.nan, np.float32)
    gt = np.stack([s.landmarks for s in ds.samples]) if m else np.zeros((0, p, 2), np.float32)
    bad_images: list[str] = []
    it = range(m)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="evaluating", unit="face", leave=False)
    for i in it:
        s = ds.samples[i]
        try:
            img = read_image(s.image)
        except ImageError as e:
            bad_images.append(str(e))
            continue
        box = landmark_box(s.landmarks)
        if not use_detector:
            pred[i] = predictor.landmarks_in_boxes(img, box[None])[0]
            continue
        faces = predictor.predict(img)
        if faces:
            ious = box_iou(np.stack([f.box for f in faces]).astype(np.float32), box)
            # Detector boxes and landmark boxes differ in convention; the face whose
            # box overlaps the ground truth most is the one that was annotated.
            k = int(np.argmax(ious))
            if ious[k] > 0.2:
                pred[i] = faces[k].landmarks
    found = ~np.isnan(pred).any(axis=(1, 2))
    out = summary(pred[found], gt[found], ds.scheme) if found.any() else {"n": 0}
    out = {**out, "n_total": m, "n_missed": int((~found).sum()), "box": "detector" if use_detector else "ground truth"}
    if bad_images:
        out["unreadable_images"] = bad_images
    errors = np.full(m, np.nan)
    if found.any():
        errors[found] = nme(pred[found], gt[found], ds.scheme, out.get("primary", "io"))
    return Evaluation(out, ds.ids(), pred, errors)
