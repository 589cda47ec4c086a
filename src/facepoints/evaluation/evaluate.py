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
from facepoints.evaluation.metrics import nme, pose_protocol, summary


# labels this far (fraction of the image's width/height) beyond its border are reported
OUTSIDE_MARGIN = 0.1


def labels_outside(points: np.ndarray, width: int, height: int, margin: float = OUTSIDE_MARGIN) -> str | None:
    """A one-line description of the labelled points lying outside the image by more than
    ``margin`` of its size (the first one and how many), or None."""
    lo, hi = -margin * np.array([width, height]), (1 + margin) * np.array([width, height]) - 1
    bad = np.flatnonzero(((points < lo) | (points > hi)).any(1))
    if not len(bad):
        return None
    x, y = points[bad[0]]
    return (f"{len(bad)} labelled point(s) outside the {width}x{height} image, e.g. point {int(bad[0])} at "
            f"({x:.6g}, {y:.6g}); they are scored as labelled (see facepoints clean)")


def _matching(faces, box, convert_to=None) -> int | None:
    """The face that was annotated: the one whose predicted landmarks' tight box (in the
    dataset's scheme, through ``convert_to(points)``) overlaps the ground-truth landmark
    box most, over 0.2. Both boxes follow the same convention whatever the scheme (a
    detector box against a 5-point box would overlap by less than that on a right match)."""
    if not faces:
        return None
    pts = [f.landmarks if convert_to is None else convert_to(f.landmarks) for f in faces]
    ious = box_iou(np.stack([landmark_box(p) for p in pts]).astype(np.float32), np.asarray(box, np.float32))
    k = int(np.argmax(ious))
    return k if ious[k] > 0.2 else None


@dataclass
class Evaluation:
    summary: dict
    ids: list[str]
    predictions: np.ndarray  # (M, P, 2), NaN where nothing was predicted
    errors: np.ndarray  # (M,) NME by the primary normaliser, NaN where missed


def evaluate(ds: Dataset, predictor, use_detector: bool = False, progress: bool = False) -> Evaluation:
    """``predictor`` on every face of ``ds``. A model with other points than the dataset is
    scored through :func:`facepoints.data.convert.convert` where the geometry defines it
    (a 68-point model on 5-point faces); the summary says ``"converted"`` then."""
    from facepoints.data.convert import can_convert, convert, model_box

    same = ds.scheme.num_points == predictor.scheme.num_points
    if not same and not can_convert(predictor.scheme.name, ds.scheme.name):
        raise ValueError(f"dataset {ds.name} has {ds.scheme.num_points} points, model predicts {predictor.scheme.num_points}")
    m, p = len(ds), ds.scheme.num_points
    pred = np.full((m, p, 2), np.nan, np.float32)
    gt = np.stack([s.landmarks for s in ds.samples]) if m else np.zeros((0, p, 2), np.float32)
    bad_images: list[str] = []
    outside: list[str] = []
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
        far = labels_outside(s.landmarks, img.shape[1], img.shape[0])
        if far:
            outside.append(f"{s.source or s.id}: {far}")
        box = landmark_box(s.landmarks)
        if not use_detector:
            if same:
                pred[i] = predictor.landmarks_in_boxes(img, box[None])[0]
            else:  # the model's own crop from the dataset's box, mapped to the model's scheme
                own = model_box(box, ds.scheme.name, predictor.scheme.name)
                pred[i] = convert(predictor.landmarks_in_boxes(img, own[None])[0], predictor.scheme.name,
                                  ds.scheme.name)
            continue
        faces = predictor.predict(img)
        to_dataset = None if same else (lambda p: convert(p, predictor.scheme.name, ds.scheme.name))
        k = _matching(faces, box, to_dataset)
        if k is not None:
            pred[i] = faces[k].landmarks if same else to_dataset(faces[k].landmarks)
    found = ~np.isnan(pred).any(axis=(1, 2))
    out = summary(pred[found], gt[found], ds.scheme) if found.any() else {"n": 0}
    if not same:
        out["converted"] = f"{predictor.scheme.name} -> {ds.scheme.name}"
    out = {**out, "n_total": m, "n_missed": int((~found).sum()), "box": "detector" if use_detector else "ground truth"}
    if bad_images:
        out["unreadable_images"] = bad_images
    if outside:  # they are scored as they are: the NME then mostly measures the label error
        out["labels_outside_image"] = outside
    errors = np.full(m, np.nan)
    if found.any():
        errors[found] = nme(pred[found], gt[found], ds.scheme, out.get("primary", "io"))
    yaws = [s.attributes.get("yaw") for s in ds.samples]
    if found.any() and all(y is not None for y in yaws):  # a yaw per face (yaw.csv): the AFLW2000-3D protocol
        box = np.full(m, np.nan)
        box[found] = nme(pred[found], gt[found], ds.scheme, "box")
        out["pose"] = pose_protocol(box, np.array(yaws, np.float64))
    return Evaluation(out, ds.ids(), pred, errors)
