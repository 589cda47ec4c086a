"""Landmark schemes: how many points a face has, which point mirrors which, and
which points normalise errors.

A scheme is plain data. Built-in ones are looked up by name (``get_scheme("ibug68")``);
a custom one is read from a small YAML/JSON file (``load_scheme_file``)::

    name: my7
    num_points: 7
    flip_pairs: [[0, 1], [3, 4]]      # everything not named maps to itself
    outer_eye_corners: [0, 1]
    pupils: [[0], [1]]                # each side: point indices averaged into a pupil
    groups: {eyes: [0, 1], nose: [2], mouth: [3, 4, 5], chin: [6]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepoints.errors import FacepointsError


class SchemeError(FacepointsError, ValueError):
    """A scheme definition is inconsistent or unknown."""


@dataclass(frozen=True)
class LandmarkScheme:
    name: str
    num_points: int
    flip_pairs: tuple[tuple[int, int], ...] = ()
    outer_eye_corners: tuple[int, int] | None = None
    pupils: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Without a flip table the scheme cannot be mirrored until one is derived
    # from a mean shape (see ``with_flip_from_mean_shape``).
    has_flip: bool = True

    def __post_init__(self) -> None:
        n = self.num_points
        if n < 1:
            raise SchemeError(f"scheme {self.name!r}: num_points must be >= 1, got {n}")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            for i in (a, b):
                if not 0 <= i < n:
                    raise SchemeError(f"scheme {self.name!r}: flip index {i} outside 0..{n - 1}")
                if i in seen:
                    raise SchemeError(f"scheme {self.name!r}: point {i} appears in two flip pairs")
                seen.add(i)
        idx = [*(self.outer_eye_corners or ())]
        for side in self.pupils or ():
            idx.extend(side)
        for gname, members in self.groups.items():
            idx.extend(members)
        for i in idx:
            if not 0 <= i < n:
                raise SchemeError(f"scheme {self.name!r}: index {i} outside 0..{n - 1}")

    @property
    def flip_permutation(self) -> np.ndarray:
        """``perm[i]`` is the point that lands on index ``i`` after a horizontal flip."""
        if not self.has_flip:
            raise SchemeError(
                f"scheme {self.name!r} has no flip table; derive one from a mean shape "
                "with scheme.with_flip_from_mean_shape(mean_shape)"
            )
        perm = np.arange(self.num_points)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def flip_landmarks(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror ``points`` (N, 2) in an image ``width`` pixels wide, as ``cv2.flip``
        mirrors the pixels, and re-index them so that point i still names the same
        facial feature. Coordinates are 0-based pixel centres: x -> width - 1 - x."""
        out = points[self.flip_permutation].copy()
        out[:, 0] = width - 1 - out[:, 0]
        return out

    def eye_centres(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.pupils is None:
            raise SchemeError(f"scheme {self.name!r} defines no pupils")
        return points[list(self.pupils[0])].mean(0), points[list(self.pupils[1])].mean(0)

    def with_flip_from_mean_shape(self, mean_shape: np.ndarray) -> "LandmarkScheme":
        """A copy whose flip pairs are derived geometrically: mirror the mean shape
        about its own vertical axis and match every point to its mirror image, one to
        one, within its group (Hungarian assignment on distances). Groups whose names
        differ only by left/right (``right_eye``/``left_eye``) form one block."""
        from scipy.optimize import linear_sum_assignment

        pts = np.asarray(mean_shape, dtype=np.float64)
        if pts.shape != (self.num_points, 2):
            raise SchemeError(f"mean shape is {pts.shape}, scheme {self.name!r} needs ({self.num_points}, 2)")
        axis = _symmetry_axis(pts, self.pupils)
        mirrored = pts.copy()
        mirrored[:, 0] = 2 * axis - pts[:, 0]
        blocks = _mirror_blocks(self.groups) or [tuple(range(self.num_points))]
        covered = sorted(i for b in blocks for i in b)
        if covered != list(range(self.num_points)):
            blocks = [tuple(range(self.num_points))]
        perm = np.arange(self.num_points)
        for block in blocks:
            b = np.asarray(block)
            cost = np.linalg.norm(pts[b][:, None, :] - mirrored[b][None, :, :], axis=2)
            rows, cols = linear_sum_assignment(cost)
            perm[b[cols]] = b[rows]
        pairs = tuple((int(i), int(perm[i])) for i in range(self.num_points) if perm[i] > i)
        # A mirror match must be symmetric to be a flip; force it where noise broke it.
        pairs = _consistent_pairs(pairs)
        return LandmarkScheme(
            name=self.name, num_points=self.num_points, flip_pairs=pairs,
            outer_eye_corners=self.outer_eye_corners, pupils=self.pupils,
            groups=self.groups, has_flip=True,
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name, "num_points": self.num_points,
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "outer_eye_corners": list(self.outer_eye_corners) if self.outer_eye_corners else None,
            "pupils": [list(s) for s in self.pupils] if self.pupils else None,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "has_flip": self.has_flip,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkScheme":
        try:
            return cls(
                name=str(d["name"]), num_points=int(d["num_points"]),
                flip_pairs=tuple((int(a), int(b)) for a, b in d.get("flip_pairs") or ()),
                outer_eye_corners=tuple(int(i) for i in d["outer_eye_corners"]) if d.get("outer_eye_corners") else None,
                pupils=tuple(tuple(int(i) for i in side) for side in d["pupils"]) if d.get("pupils") else None,
                groups={str(k): tuple(int(i) for i in v) for k, v in (d.get("groups") or {}).items()},
                has_flip=bool(d.get("has_flip", True)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SchemeError(f"invalid scheme definition: {e}") from e


def _symmetry_axis(pts: np.ndarray, pupils) -> float:
    if pupils is not None:
        return float((pts[list(pupils[0])].mean(0)[0] + pts[list(pupils[1])].mean(0)[0]) / 2)
    return float(pts[:, 0].mean())


def _mirror_blocks(groups: dict[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Groups as blocks that are closed under mirroring: a ``left_X`` group is merged
    with its ``right_X`` twin (a point's mirror image lies in the twin, not in its own
    group)."""
    merged: dict[str, list[int]] = {}
    for name, members in groups.items():
        key = name.lower().replace("left", "*").replace("right", "*")
        merged.setdefault(key, []).extend(members)
    return [tuple(m) for m in merged.values()]


def _consistent_pairs(pairs):
    used: set[int] = set()
    out = []
    for a, b in pairs:
        if a in used or b in used:
            continue
        used.update((a, b))
        out.append((a, b))
    return tuple(out)


def _pairs(*pairs: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple(pairs)


def _mirror_range(lo: int, hi: int) -> list[tuple[int, int]]:
    """Pairs (lo, hi), (lo+1, hi-1), ... for a contour numbered across the face."""
    return [(lo + k, hi - k) for k in range((hi - lo + 1) // 2)]


IBUG68 = LandmarkScheme(
    name="ibug68",
    num_points=68,
    flip_pairs=_pairs(
        *_mirror_range(0, 16), *_mirror_range(17, 26), (31, 35), (32, 34),
        (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
        (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67),
    ),
    outer_eye_corners=(36, 45),
    pupils=(tuple(range(36, 42)), tuple(range(42, 48))),
    groups={
        "jaw": tuple(range(0, 17)), "right_brow": tuple(range(17, 22)),
        "left_brow": tuple(range(22, 27)), "nose": tuple(range(27, 36)),
        "right_eye": tuple(range(36, 42)), "left_eye": tuple(range(42, 48)),
        "mouth": tuple(range(48, 68)),
    },
)

WFLW98 = LandmarkScheme(
    name="wflw98",
    num_points=98,
    flip_pairs=_pairs(
        *_mirror_range(0, 32),
        (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
        (55, 59), (56, 58),
        (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),
        (76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95),
        (96, 97),
    ),
    outer_eye_corners=(60, 72),
    pupils=((96,), (97,)),
    groups={
        "jaw": tuple(range(0, 33)), "right_brow": tuple(range(33, 42)),
        "left_brow": tuple(range(42, 51)), "nose": tuple(range(51, 60)),
        "right_eye": tuple(range(60, 68)), "left_eye": tuple(range(68, 76)),
        "mouth": tuple(range(76, 96)), "pupils": (96, 97),
    },
)

# COFW-29 order as used by HRNet's COFW-68/29 tooling (0-based).
COFW29 = LandmarkScheme(
    name="cofw29",
    num_points=29,
    flip_pairs=_pairs((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14), (16, 17),
                      (13, 15), (18, 19), (22, 23)),
    outer_eye_corners=(8, 9),
    pupils=((16,), (17,)),
    groups={"brows": tuple(range(0, 8)), "eyes": tuple(range(8, 18)), "nose": tuple(range(18, 22)),
            "mouth": tuple(range(22, 28)), "chin": (28,)},
)

FIVE = LandmarkScheme(
    name="five",
    num_points=5,
    flip_pairs=_pairs((0, 1), (3, 4)),
    outer_eye_corners=(0, 1),  # eye centres: the only eye points this scheme has
    pupils=((0,), (1,)),
    groups={"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)},
)

# The "thousand facial landmarks" contest scheme. No official flip table exists:
# derive it from a mean shape with ``CONTEST971.with_flip_from_mean_shape(mean)``.
CONTEST971 = LandmarkScheme(
    name="contest971",
    num_points=971,
    flip_pairs=(),
    outer_eye_corners=None,
    pupils=((969,), (970,)),
    groups={
        "lower_oval": tuple(range(0, 128)), "upper_oval": tuple(range(128, 273)),
        "brows": tuple(range(273, 401)), "nose": tuple(range(401, 587)),
        "eyes": tuple(range(587, 841)), "lips": tuple(range(841, 969)),
        "pupils": (969, 970),
    },
    has_flip=False,
)

BUILTIN: dict[str, LandmarkScheme] = {s.name: s for s in (IBUG68, WFLW98, COFW29, FIVE, CONTEST971)}


def get_scheme(name_or_path: str | LandmarkScheme) -> LandmarkScheme:
    """A built-in scheme by name, or a custom one from a ``.yaml``/``.json`` file."""
    if isinstance(name_or_path, LandmarkScheme):
        return name_or_path
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    if Path(name_or_path).suffix.lower() in (".yaml", ".yml", ".json"):
        return load_scheme_file(name_or_path)
    raise SchemeError(f"unknown scheme {name_or_path!r}; built in: {', '.join(BUILTIN)}, or a .yaml/.json file")


def scheme_for_points(n: int) -> LandmarkScheme:
    """The built-in scheme with ``n`` points, or an anonymous one without flips."""
    for s in BUILTIN.values():
        if s.num_points == n:
            return s
    return LandmarkScheme(name=f"points{n}", num_points=n, has_flip=False)


def load_scheme_file(path: str | Path) -> LandmarkScheme:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SchemeError(f"{p}: cannot read scheme file: {e}") from e
    import yaml

    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise SchemeError(f"{p}: cannot parse scheme file: {e}") from e
    if not isinstance(data, dict):
        raise SchemeError(f"{p}: a scheme file must hold a mapping")
    data.setdefault("name", p.stem)
    try:
        return LandmarkScheme.from_dict(data)
    except SchemeError as e:
        raise SchemeError(f"{p}: {e}") from e
