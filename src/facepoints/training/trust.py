"""Calibrating and measuring a model's trust outputs (a PIP head with ``pip_trust``).

The network gives, per landmark, an error scale ``b`` (crop units) and a visibility
probability. Calibration, fitted on held-out faces and stored in the model file
(``ModelInfo.trust``), turns the scale into a radius: per landmark the factor ``k`` such
that 90 % (``coverage``, stored with it) of the held-out errors lie within ``k * b``; and it fixes the quality scale:
a face's quality is ``2 ** -(mean radius / quality_scale)``, so the median held-out
face scores 0.5.
"""

from __future__ import annotations

import numpy as np
import torch

COVERAGE = 0.9


@torch.no_grad()
def trust_outputs(model, images: np.ndarray, input_size: int, batch: int = 64):
    """(landmarks (M, P, 2) in crop pixels, scale (M, P) crop units, visibility (M, P))
    for centre crops of cached images (as ``predict_crops``)."""
    model.eval()
    device = next(model.parameters()).device
    o = (images.shape[1] - input_size) // 2
    pts, scale, vis = [], [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch, o:o + input_size, o:o + input_size]))
        lm, tr = model.with_trust(x.permute(0, 3, 1, 2).float().div_(255).to(device))
        pts.append(lm.float().cpu().numpy() * (input_size - 1) + o)
        scale.append(tr[..., 0].float().cpu().numpy())
        vis.append(tr[..., 1].float().cpu().numpy())
    return np.concatenate(pts), np.concatenate(scale), np.concatenate(vis)


def point_errors_crop(pred: np.ndarray, gt: np.ndarray, input_size: int) -> np.ndarray:
    """Per-point error in crop units (the unit of the predicted scale)."""
    return np.linalg.norm(pred - gt, axis=-1) / (input_size - 1)


def fit_trust(errors: np.ndarray, scale: np.ndarray, fitted_on: str = "", quality_on=None,
              coverage: float = COVERAGE) -> dict:
    """The calibration (see the module doc) from per-point errors and scales (M, P), both
    in crop units. ``quality_on``: ``(errors, scale)`` of the faces whose median sets the
    quality scale (quality 0.5), when not all of them (the validation split, not the extra
    calibration sets). ``coverage``: the share of held-out errors each radius holds."""
    if not 0.5 <= coverage < 1:
        raise ValueError(f"coverage must be in [0.5, 1), got {coverage}")
    ratio = errors / np.maximum(scale, 1e-9)
    factors = np.quantile(ratio, coverage, axis=0)
    radius = factors[None] * (scale if quality_on is None else quality_on[1])
    return {"radius90": [float(f) for f in factors], "quality_scale": float(np.median(radius.mean(1))),
            "coverage": float(coverage), "faces": int(len(errors)), "fitted_on": fitted_on}


def _auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (ties counted half)."""
    from scipy.stats import rankdata

    score, positive = np.asarray(score).ravel(), np.asarray(positive).ravel()
    pos, n = positive.astype(bool), len(score)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == n:
        return None
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))


def trust_report(errors: np.ndarray, scale: np.ndarray, calibration: dict, face_nme: np.ndarray,
                 visible_prob: np.ndarray | None = None, visible_true: np.ndarray | None = None,
                 fail_at: float = 0.08, keep: float = 0.9) -> dict:
    """How well the trust outputs do on a set of faces: ``coverage`` of the calibrated 90 %
    radius (share of points inside it), ``rank_corr`` (Spearman, radius vs error over all
    points), ``fail_auroc`` (low quality flags faces whose ``face_nme`` is over ``fail_at``),
    ``selective_gain`` (how much lower the mean NME of the ``keep`` most trusted faces is,
    as a fraction), ``visible_auroc`` (visibility probability vs hidden points) where the
    truth is given. ``errors``/``scale`` in crop units, ``face_nme`` fractions."""
    from scipy.stats import spearmanr

    radius = np.asarray(calibration["radius90"])[None] * scale
    quality = 2.0 ** (-radius.mean(1) / calibration["quality_scale"])
    out = {"coverage": float((errors <= radius).mean()),
           "rank_corr": float(spearmanr(radius.ravel(), errors.ravel()).statistic)}
    auc = _auroc(-quality, face_nme > fail_at)
    if auc is not None:
        out["fail_auroc"] = auc
    order = np.argsort(-quality)[:max(1, int(round(keep * len(quality))))]
    out["selective_gain"] = float(1 - face_nme[order].mean() / face_nme.mean())
    if visible_prob is not None and visible_true is not None:
        auc = _auroc(-visible_prob.ravel(), visible_true.ravel() < 0.5)
        if auc is not None:
            out["visible_auroc"] = auc
    return out
