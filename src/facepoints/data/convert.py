"""Landmarks of one scheme derived from another where the geometry defines them.

============================  =====================================================
conversion                    rule
============================  =====================================================
``ibug68`` -> ``five``        eye centres (mean of 36-41, of 42-47), nose tip 30,
                              mouth corners 48, 54 (image-left first, as CUHK's)
``wflw98`` -> ``ibug68``      the published WFLW-to-300-W table (every other jaw
                              point; brows' upper edges; eye corners and lids;
                              nose; mouth)
``wflw98`` -> ``five``        through ``ibug68``
``mediapipe478`` -> ``ibug68`` MediaPipe Face Mesh vertices (468 or 478) by
                              :data:`facepoints.data.canonical.MEDIAPIPE_TO_IBUG68`
============================  =====================================================

Each maps ``(..., N, 2)`` arrays (one face or a batch). What the rules cost is measured
where two annotations of one face exist (``benchmarks`` and the tests).
"""

from __future__ import annotations

import numpy as np

from facepoints.errors import UsageError

# WFLW 98 index for each of the 68 iBUG points
WFLW98_TO_IBUG68 = (
    list(range(0, 33, 2))                       # jaw 0-16
    + [33, 34, 35, 36, 37, 42, 43, 44, 45, 46]  # brows 17-26
    + [51, 52, 53, 54, 55, 56, 57, 58, 59]      # nose 27-35
    + [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75]  # eyes 36-47
    + list(range(76, 96))                       # mouth 48-67
)
assert len(WFLW98_TO_IBUG68) == 68


def _ibug68_to_five(p: np.ndarray) -> np.ndarray:
    return np.stack([p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2), p[..., 30, :], p[..., 48, :],
                     p[..., 54, :]], -2)


def _wflw98_to_ibug68(p: np.ndarray) -> np.ndarray:
    return p[..., WFLW98_TO_IBUG68, :]


def _mediapipe_to_ibug68(p: np.ndarray) -> np.ndarray:
    from facepoints.data.canonical import mediapipe_to_ibug68

    return mediapipe_to_ibug68(p)


# the tight box of a face's 68 iBUG points from the tight box of its five points (median
# of the per-face ratios over the 2,012 300-W training faces of ../shared/data, both boxes
# from the same labels): what lets a 68-point model crop a face labelled with 5 points
FIVE_BOX_TO_IBUG68_BOX = {"dx": -0.0056, "dy": 0.1416, "sw": 2.1876, "sh": 1.9608}


def model_box(box, dataset_scheme, model_scheme) -> np.ndarray:
    """A face's tight landmark box in ``model_scheme`` from its box in ``dataset_scheme``
    (the same box when they are the same; refused where no map was measured)."""
    from facepoints.data.calibration import BoxCalibration

    a, b = scheme_of(dataset_scheme), scheme_of(model_scheme)
    if a == b:
        return np.asarray(box, np.float32)
    if (a, b) == ("five", "ibug68"):
        return BoxCalibration(**FIVE_BOX_TO_IBUG68_BOX).apply(np.asarray(box, np.float64))
    raise UsageError(f"no box map from {a} faces to a {b} model's crop")


CONVERSIONS = {
    ("ibug68", "five"): _ibug68_to_five,
    ("wflw98", "ibug68"): _wflw98_to_ibug68,
    ("wflw98", "five"): lambda p: _ibug68_to_five(_wflw98_to_ibug68(p)),
    ("mediapipe478", "ibug68"): _mediapipe_to_ibug68,
    ("mediapipe468", "ibug68"): _mediapipe_to_ibug68,
}


def scheme_of(name_or_points) -> str:
    """A scheme name for a scheme object, a name, or a point count (68, 98, 5, 468, 478)."""
    if isinstance(name_or_points, int):
        return {68: "ibug68", 98: "wflw98", 5: "five", 468: "mediapipe468", 478: "mediapipe478"}.get(
            name_or_points, str(name_or_points))
    return getattr(name_or_points, "name", str(name_or_points))


def convert(points, source, target) -> np.ndarray:
    """``points`` (..., N, 2) of scheme ``source`` as scheme ``target`` (names, schemes or
    point counts); the same array when they are the same scheme."""
    a, b = scheme_of(source), scheme_of(target)
    p = np.asarray(points, np.float32)
    if a == b:
        return p
    if (a, b) not in CONVERSIONS:
        known = ", ".join(f"{x} -> {y}" for x, y in CONVERSIONS)
        raise UsageError(f"no conversion from {a} to {b}: the geometry defines only {known}")
    return CONVERSIONS[(a, b)](p).astype(np.float32)


def can_convert(source, target) -> bool:
    a, b = scheme_of(source), scheme_of(target)
    return a == b or (a, b) in CONVERSIONS
