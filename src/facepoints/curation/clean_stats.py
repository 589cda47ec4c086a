"""Statistics of the cleaning checks: robust z-scores, and a robust shape model
(Procrustes mean and point distribution model) of a dataset's landmarks."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.stats import median_abs_deviation

INLIER_FRACTION = 0.8  # the share of best-fitting shapes the shape model is fitted on

_Q90_ONE, _Q90_TWO = NormalDist().inv_cdf(0.9), NormalDist().inv_cdf(0.95)


def robust_z(x, floor: float = 1e-9, two_sided: bool = False, tail: bool = True) -> np.ndarray:
    """``(x - median) / scale`` over the finite values (NaN stays NaN); ``two_sided``:
    the absolute value.

    ``scale`` is ``1.4826 * MAD`` (a Gaussian's standard deviation), at least
    ``floor``, and, with ``tail``, at least what the 90th percentile of the
    deviations implies for a Gaussian, capped at 3 times the MAD scale: a check whose
    values are heavy-tailed on good data (a model's error on hard faces) then counts
    less per unit than a light-tailed one, while up to 10 % of bad samples (3 times
    more at most) cannot hide themselves by inflating it."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.full_like(x, np.nan)
    med = np.median(x[ok])
    dev = x[ok] - med
    mad_scale = max(float(median_abs_deviation(dev, scale="normal")), floor)  # 1.4826 x MAD
    scale = mad_scale
    if tail and ok.sum() >= 10:
        q = np.quantile(np.abs(dev), 0.9) / _Q90_TWO if two_sided else np.quantile(dev, 0.9) / _Q90_ONE
        scale = min(max(scale, float(q)), 3 * mad_scale)
    z = (x - med) / scale
    return np.abs(z) if two_sided else z


def as_complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


def normalise_shapes(z: np.ndarray) -> np.ndarray:
    """Centre each shape (complex, (..., N)) and scale it to unit RMS radius."""
    z = z - z.mean(-1, keepdims=True)
    r = np.sqrt((np.abs(z) ** 2).mean(-1, keepdims=True))
    return z / np.where(r > 0, r, 1.0)


def align_shapes(z: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Similarity-align centred shapes ``z`` (S, N) to ``target`` (N,), no reflection:
    the complex factor ``a`` minimising ``|a z - target|``."""
    a = (np.conj(z) @ target) / np.maximum((np.abs(z) ** 2).sum(-1), 1e-12)
    return a[:, None] * z


class ShapeModel:
    """Robust mean shape and point distribution model of centred, unit-size shapes.

    ``fit``: align every shape to the current mean (similarity, no reflection), keep
    the best-fitting ``INLIER_FRACTION``, average them, repeat; then PCA of the
    aligned inliers, keeping ``modes`` modes (by default as many as explain 90 % of
    the variance, at most 8 and at most a quarter of the inliers)."""

    def __init__(self, shapes: np.ndarray, modes: int | None = None, iterations: int = 6):
        z = normalise_shapes(shapes)
        mean = normalise_shapes(np.median(z.real, 0) + 1j * np.median(z.imag, 0))
        keep = np.ones(len(z), bool)
        for _ in range(iterations):
            aligned = align_shapes(z, mean)
            res = np.sqrt((np.abs(aligned - mean) ** 2).mean(-1))
            keep = res <= np.quantile(res, INLIER_FRACTION)
            new = normalise_shapes(aligned[keep].mean(0))
            mean = normalise_shapes(align_shapes(new[None], mean)[0])
        self.mean = mean
        x = as_real(align_shapes(z[keep], mean))
        self.mu = x.mean(0)
        if modes is None:
            _, s, _ = np.linalg.svd(x - self.mu, full_matrices=False)
            var = s ** 2 / max((s ** 2).sum(), 1e-12)
            modes = int(np.searchsorted(np.cumsum(var), 0.9) + 1)
            modes = min(modes, 8, max(0, keep.sum() // 4))
        self.modes = np.zeros((0, x.shape[1]))
        if modes > 0 and len(x) > 1:
            _, _, vt = np.linalg.svd(x - self.mu, full_matrices=False)
            self.modes = vt[:modes]

    def fit(self, shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For complex shapes (S, N): the per-point residual (S, N) after similarity
        alignment and projection on the modes, and the model's reconstruction (S, N)
        of each (complex, in the unit-size frame the residual is measured in)."""
        z = normalise_shapes(shapes)
        # align to the mean, then (twice) to each shape's own reconstruction
        aligned = align_shapes(z, self.mean)
        for _ in range(3):
            x = as_real(aligned) - self.mu
            recon = self.mu + (x @ self.modes.T) @ self.modes
            a = (np.conj(z) * from_real(recon)).sum(-1) / np.maximum((np.abs(z) ** 2).sum(-1), 1e-12)
            aligned = a[:, None] * z
        x = as_real(aligned) - self.mu
        proj = (x @ self.modes.T) @ self.modes
        r = x - proj
        n = z.shape[-1]
        return np.hypot(r[:, :n], r[:, n:]), from_real(self.mu + proj)

    def residual(self, shapes: np.ndarray) -> np.ndarray:
        return self.fit(shapes)[0]


def complex_median(z: np.ndarray, axis=None):
    return np.median(z.real, axis=axis) + 1j * np.median(z.imag, axis=axis)


def as_real(z: np.ndarray) -> np.ndarray:
    return np.concatenate([z.real, z.imag], axis=-1)


def from_real(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1] // 2
    return x[..., :n] + 1j * x[..., n:]


def suspicious_points(pairs: set, expected: dict) -> set:
    """Points of coinciding pairs that make an error: a cluster at one spot holding
    2 points that the shape model's reconstruction of this face puts apart (by more
    than a third of the face's RMS radius), or 5 or more points. Points that do touch
    in real faces (the lids of a closed eye; the inner and outer lips of a closed
    mouth, up to 4 of them; the far side of a face in profile) are close in the
    reconstruction too."""
    if not pairs:
        return set()
    a, b = np.array(sorted(pairs)).T
    nodes = np.unique(np.concatenate([a, b]))
    pos = {int(v): k for k, v in enumerate(nodes)}
    graph = coo_matrix((np.ones(len(a)), ([pos[int(v)] for v in a], [pos[int(v)] for v in b])),
                       shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    clusters: dict[int, set] = {}
    for node, lab in zip(nodes, label):
        clusters.setdefault(int(lab), set()).add(int(node))
    out = set()
    for c in clusters.values():
        if len(c) >= 5 or any(expected.get(p, 0.0) > 1 / 3 for p in pairs if p[0] in c):
            out |= c
    return out


def coinciding_pairs(points: np.ndarray, tol: float) -> set:
    """Index pairs of points within ``tol`` of each other."""
    return {(int(a), int(b)) for a, b in cKDTree(points).query_pairs(tol)}
