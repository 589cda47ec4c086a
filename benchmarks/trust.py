"""How far the trust outputs can be trusted, measured through ``Face`` (the ONNX model,
ground-truth landmark boxes, as users get them):

* ``error_radius``: coverage of the 90 % radius (share of points inside it) per source of
  the validation split and per |yaw| bucket of AFLW2000-3D's dev half; Spearman rank
  correlation of radius with error;
* ``quality``: AUROC for flagging faces over 8 % NME (landmark-box normalised) on the
  large-pose faces; NME of the 90 % most trusted faces against all (selective NME);
* ``visible``: AUROC for points under pasted occluders of a kind training never used
  (patches cut from other photos, ellipses like a hand or a cup) on validation faces;
* ``pose``: yaw mean absolute error against AFLW2000-3D's yaw (its sign is the opposite
  of ours), per bucket.

    python benchmarks/trust.py --config configs/default-pose.yaml --model default --out benchmarks/trust.md

The calibration inside the model file was fitted on the config's validation split, so
the coverage there is by construction; AFLW2000-3D's faces never took part in training
or calibration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr

import facepoints
from facepoints.data.formats import read_dataset
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.evaluation.machine import command_line, report_header
from facepoints.evaluation.metrics import POSE_BUCKETS, nme
from facepoints.training.config import load_config
from facepoints.training.loop import make_splits, source_labels
from facepoints.training.trust import _auroc


def faces_through(predictor, samples, occlude=None, rng=None):
    """(predictions (M, P, 2), radius (M, P), visible (M, P), quality (M,), yaw (M,), hidden (M, P) or None)."""
    out = {"pred": [], "radius": [], "visible": [], "quality": [], "yaw": [], "hidden": []}
    for s in samples:
        img = read_image(s.image)
        hidden = None
        if occlude is not None:
            img, hidden = occlude(img, s, rng)
        f = predictor.predict(img, landmark_boxes=[landmark_box(s.landmarks)])[0]
        if f.error_radius is None:
            sys.exit(f"{predictor.info}: the model has no calibrated trust outputs")
        out["pred"].append(f.landmarks)
        out["radius"].append(f.error_radius)
        out["visible"].append(f.visible)
        out["quality"].append(f.quality)
        out["yaw"].append(f.pose["yaw"] if f.pose else np.nan)
        out["hidden"].append(hidden)
    return {k: (np.array(v) if k != "hidden" or v[0] is not None else None) for k, v in out.items()}


def paste_occluder(img, sample, rng, donors):
    """A patch of another photo (a rectangle or an ellipse, 25-45 % of the face) pasted on
    the face; which points it hides."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = landmark_box(sample.landmarks)
    side = max(x1 - x0, y1 - y0)
    pw, ph = (rng.uniform(0.25, 0.45, 2) * side).astype(int) + 1
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    donor = donors[int(rng.integers(len(donors)))]
    dy, dx = int(rng.integers(0, max(1, donor.shape[0] - ph))), int(rng.integers(0, max(1, donor.shape[1] - pw)))
    patch = cv2.resize(donor[dy:dy + ph, dx:dx + pw], (pw, ph))
    mask = np.zeros((ph, pw), np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(mask, (pw // 2, ph // 2), (pw // 2, ph // 2), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        mask[:] = 1
    ox, oy = int(cx - pw / 2), int(cy - ph / 2)
    out = img.copy()
    full = np.zeros((h, w), np.uint8)
    ys, xs = slice(max(0, oy), min(h, oy + ph)), slice(max(0, ox), min(w, ox + pw))
    py, px = slice(ys.start - oy, ys.stop - oy), slice(xs.start - ox, xs.stop - ox)
    m = mask[py, px].astype(bool)
    out[ys, xs][m] = patch[py, px][m]
    full[ys, xs] = mask[py, px]
    pts = np.round(sample.landmarks).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    hidden = np.zeros(len(pts), bool)
    hidden[inside] = full[pts[inside, 1], pts[inside, 0]] > 0
    return out, hidden


SKIN = np.array([[224, 172, 140], [198, 134, 102], [141, 85, 54], [255, 219, 172], [169, 113, 80]], np.float64)


def paste_hand(img, sample, rng):
    """A hand-like shape (a palm ellipse and five rounded fingers, turned at random), in a
    skin tone with soft shading and noise, over part of the face; which points it hides."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = landmark_box(sample.landmarks)
    side = max(x1 - x0, y1 - y0)
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0 + 0.2 * (y1 - y0), y1 + 0.2 * (y1 - y0))
    ang = rng.uniform(-np.pi, np.pi)
    pw, ph = rng.uniform(0.15, 0.22) * side, rng.uniform(0.18, 0.26) * side
    cv2.ellipse(mask, (int(cx), int(cy)), (int(pw), int(ph)), float(np.degrees(ang)), 0, 360, 1, -1)
    up = np.array([np.sin(ang), -np.cos(ang)])          # the fingers' direction
    across = np.array([np.cos(ang), np.sin(ang)])
    width = max(2, int(rng.uniform(0.05, 0.07) * side))
    for k, off in enumerate(np.linspace(-0.75, 0.75, 4)):
        base = np.array([cx, cy]) + up * ph * 0.8 + across * pw * off
        tip = base + up * rng.uniform(0.22, 0.34) * side * (0.8 if k in (0, 3) else 1.0)
        cv2.line(mask, tuple(int(v) for v in base), tuple(int(v) for v in tip), 1, width)
        cv2.circle(mask, tuple(int(v) for v in tip), width // 2, 1, -1)
    thumb = np.array([cx, cy]) + across * pw * 0.9
    cv2.line(mask, tuple(int(v) for v in thumb), tuple(int(v) for v in thumb + (across + up) * 0.18 * side), 1, width)
    tone = SKIN[int(rng.integers(len(SKIN)))]
    yy, xx = np.mgrid[0:h, 0:w]
    shade = 0.85 + 0.15 * np.cos((xx - cx) / max(side, 1) * 3)[..., None]
    colour = np.clip(tone[None, None] * shade + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    out = img.copy()
    m = mask.astype(bool)
    out[m] = colour[m]
    pts = np.round(sample.landmarks).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    hidden = np.zeros(len(pts), bool)
    hidden[inside] = m[pts[inside, 1], pts[inside, 0]]
    return out, hidden


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True, help="a calibrated trust model (.safetensors, .onnx or a bundled name)")
    ap.add_argument("--pose-set", default="300w:../shared/data/aflw2000-dev")
    ap.add_argument("--occluded", type=int, default=300, help="validation faces to occlude")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    predictor = facepoints.load(a.model, detector=None)
    cfg = load_config(a.config)
    splits = make_splits(cfg)
    val = splits.val.samples
    lines = report_header(f"Trust outputs: {a.model}", command_line(__file__),
                          "GT boxes, through Face (ONNX Runtime)")
    scheme = splits.val.scheme

    # error radius on the validation split, per source
    v = faces_through(predictor, val)
    err = np.linalg.norm(v["pred"] - np.stack([s.landmarks for s in val]), axis=-1)
    src = np.array([s.attributes["source"] for s in val])
    lines += ["## Error radius (90 %) on the validation split (the calibration's own faces)", "",
              "| source | faces | coverage | rank corr. radius vs error |", "|---|---:|---:|---:|"]
    for spec, label in source_labels(sorted(set(src))).items():
        m = src == spec
        lines.append(f"| {label} | {m.sum()} | {(err[m] <= v['radius'][m]).mean():.3f} | "
                     f"{spearmanr(v['radius'][m].ravel(), err[m].ravel()).statistic:.3f} |")
    lines.append(f"| all | {len(val)} | {(err <= v['radius']).mean():.3f} | "
                 f"{spearmanr(v['radius'].ravel(), err.ravel()).statistic:.3f} |")

    # large poses: coverage, failure detection, selective NME, yaw
    ds = read_dataset(a.pose_set)
    p = faces_through(predictor, ds.samples)
    gt = np.stack([s.landmarks for s in ds.samples])
    perr = np.linalg.norm(p["pred"] - gt, axis=-1)
    face_nme = nme(p["pred"], gt, scheme, "box")
    yaw_true = -np.array([s.attributes["yaw"] for s in ds.samples])  # AFLW's sign is the opposite of ours
    ay = np.abs(yaw_true)
    lines += ["", f"## Large poses: {a.pose_set} ({len(ds)} faces, never trained or calibrated on)", "",
              "| \\|yaw\\| | faces | NME box % | coverage | rank corr. | yaw MAE deg |", "|---|---:|---:|---:|---:|---:|"]
    for i, (lo, hi) in enumerate(POSE_BUCKETS):
        m = (ay >= lo) & ((ay < hi) | (i == len(POSE_BUCKETS) - 1))
        lines.append(f"| {lo:.0f}-{hi:.0f} | {m.sum()} | {face_nme[m].mean() * 100:.2f} | "
                     f"{(perr[m] <= p['radius'][m]).mean():.3f} | "
                     f"{spearmanr(p['radius'][m].ravel(), perr[m].ravel()).statistic:.3f} | "
                     f"{np.nanmean(np.abs(p['yaw'][m] - yaw_true[m])):.1f} |")
    big = ay >= 30
    fails = face_nme > 0.08
    keep = np.argsort(-p["quality"])[:int(round(0.9 * len(ds)))]
    kept = np.isin(np.arange(len(ds)), keep)
    best = np.isin(np.arange(len(ds)), np.argsort(face_nme)[:len(keep)])
    keep_big = np.flatnonzero(big)[np.argsort(-p["quality"][big])[:int(round(0.9 * big.sum()))]]
    lines += ["", f"- coverage over all {len(ds)} faces: {(perr <= p['radius']).mean():.3f}; rank correlation "
              f"{spearmanr(p['radius'].ravel(), perr.ravel()).statistic:.3f}",
              f"- failures (NME box > 8 %): {fails.sum()} of {len(ds)}; quality AUROC "
              f"{_auroc(-p['quality'], fails):.3f} (all faces), {_auroc(-p['quality'][big], fails[big]):.3f} "
              f"(\\|yaw\\| >= 30, {fails[big].sum()} failures of {big.sum()})",
              f"- selective NME, the 90 % most trusted faces: {face_nme[keep].mean() * 100:.2f} vs "
              f"{face_nme.mean() * 100:.2f} % ({(1 - face_nme[keep].mean() / face_nme.mean()) * 100:.1f} % lower); "
              f"\\|yaw\\| >= 30: {face_nme[keep_big].mean() * 100:.2f} vs {face_nme[big].mean() * 100:.2f} % "
              f"({(1 - face_nme[keep_big].mean() / face_nme[big].mean()) * 100:.1f} % lower); a perfect ranking "
              f"(keeping the 90 % of lowest true error) would give "
              f"{(1 - np.sort(face_nme)[:len(keep)].mean() / face_nme.mean()) * 100:.1f} % lower: the most any "
              "quality score can reach on these faces",
              f"- the same by AFLW2000-3D's protocol (the balanced mean of the \\|yaw\\| buckets' NME, each over "
              f"its kept faces): {balanced(face_nme, ay, kept) * 100:.2f} vs {balanced(face_nme, ay) * 100:.2f} % "
              f"({(1 - balanced(face_nme, ay, kept) / balanced(face_nme, ay)) * 100:.1f} % lower; a perfect ranking "
              f"{(1 - balanced(face_nme, ay, best) / balanced(face_nme, ay)) * 100:.1f} %)",
              f"- yaw MAE: {np.nanmean(np.abs(p['yaw'] - yaw_true)):.1f} deg over all faces, "
              f"{np.nanmean(np.abs(p['yaw'] - yaw_true)[big]):.1f} deg at \\|yaw\\| >= 30"]

    # the nearest equivalent a peer has: dlib's 68 landmarks (from the same GT boxes) + the same PnP fit
    try:
        from facepoints.curation.labeling import dlib_landmarker

        dlib_run = dlib_landmarker()
    except Exception as e:  # noqa: BLE001 (dlib is optional)
        lines += [f"- dlib: not measured ({e})"]
    else:
        from facepoints.data.pose import PoseError, head_pose

        dy = []
        for s in ds.samples:
            try:
                dy.append(head_pose(dlib_run(read_image(s.image), landmark_box(s.landmarks)))[0])
            except PoseError:
                dy.append(np.nan)
        dy = np.array(dy)
        lines += [f"- dlib 68 + the same 3-D fit, same faces and boxes: yaw MAE {np.nanmean(np.abs(dy - yaw_true)):.1f} deg "
                  f"over all faces, {np.nanmean(np.abs(dy - yaw_true)[big]):.1f} deg at \\|yaw\\| >= 30 (dlib has no "
                  "error radius, visibility or quality; MediaPipe gives none of them either)"]

    # visibility under occluders: patches of other photos (the kind configs/default-trust.yaml
    # trains with, from other crops) and hand-like shapes (a kind no training used)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(val), min(a.occluded, len(val)), replace=False)
    donors = [read_image(val[i].image) for i in rng.choice(len(val), 40, replace=False)]
    occ = faces_through(predictor, [val[i] for i in pick], lambda im, s, r: paste_occluder(im, s, r, donors), rng)
    hidden = occ["hidden"]
    lines += ["", f"## Visibility under pasted occluders ({len(pick)} validation faces, patches of other photos)", "",
              f"- points hidden: {hidden.sum()} of {hidden.size}; visibility AUROC {_auroc(-occ['visible'], hidden):.3f}",
              f"- mean visibility of hidden points {occ['visible'][hidden].mean():.3f}, of the others "
              f"{occ['visible'][~hidden].mean():.3f}",
              f"- far-side points of profile faces (\\|yaw\\| >= 60, jaw points on the far side): mean visibility "
              f"{far_side_visibility(p, yaw_true):.3f}"]
    hands = faces_through(predictor, [val[i] for i in pick], lambda im, s, r: paste_hand(im, s, r),
                          np.random.default_rng(1))
    hid = hands["hidden"]
    lines += ["", f"## Visibility under hand-like shapes ({len(pick)} validation faces; no training used this kind)", "",
              f"- points hidden: {hid.sum()} of {hid.size}; visibility AUROC {_auroc(-hands['visible'], hid):.3f}",
              f"- mean visibility of hidden points {hands['visible'][hid].mean():.3f}, of the others "
              f"{hands['visible'][~hid].mean():.3f}"]
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)


def balanced(face_nme, abs_yaw, mask=None) -> float:
    """The AFLW2000-3D protocol's balanced mean: the mean over the |yaw| buckets of each
    bucket's mean NME (over the faces in ``mask``)."""
    mask = np.ones(len(face_nme), bool) if mask is None else mask
    means = []
    for i, (lo, hi) in enumerate(POSE_BUCKETS):
        m = mask & (abs_yaw >= lo) & ((abs_yaw < hi) | (i == len(POSE_BUCKETS) - 1))
        means.append(face_nme[m].mean())
    return float(np.mean(means))


def far_side_visibility(p, yaw_true) -> float:
    """Mean visibility of the far half of the jaw on faces turned 60 degrees or more (yaw > 0:
    the subject's left, points 9-16, goes away)."""
    vals = []
    for vis, y in zip(p["visible"], yaw_true):
        if abs(y) >= 60:
            vals.append(vis[9:17].mean() if y > 0 else vis[0:8].mean())
    return float(np.mean(vals)) if vals else float("nan")


if __name__ == "__main__":
    main()
