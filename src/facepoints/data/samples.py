"""What every reader returns: a ``Dataset`` of ``Sample``s in one landmark scheme.

Coordinates everywhere in facepoints are 0-based pixel centres of the original image
(the centre of the top-left pixel is (0, 0)), as OpenCV uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepoints.errors import FacepointsError
from facepoints.schemes import LandmarkScheme


class AnnotationError(FacepointsError, ValueError):
    """A malformed annotation. The message names the file and, where known, the line."""

    http_status = 422

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class Sample:
    """One annotated face: an image file and its landmarks, ``(N, 2)`` float32."""

    image: Path
    landmarks: np.ndarray
    id: str
    source: str = ""  # "file:line" the annotation came from, for error messages
    box: np.ndarray | None = None  # x0, y0, x1, y1 where the format carries one
    attributes: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The unit a split must keep together (a person, a source photo)."""
        return self.attributes.get("group", self.id)


@dataclass
class Dataset:
    name: str
    scheme: LandmarkScheme
    samples: list[Sample]
    # Problems the reader was told to skip rather than stop on, e.g. missing images.
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def subset(self, indices, name: str | None = None) -> "Dataset":
        return Dataset(name or self.name, self.scheme, [self.samples[i] for i in indices], list(self.warnings))

    def ids(self) -> list[str]:
        return [s.id for s in self.samples]


def check_points(points, num_points: int, path, line: int | None = None) -> np.ndarray:
    """Validate a parsed landmark array: right count, finite numbers."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size != 2 * num_points:
        raise AnnotationError(path, f"expected {num_points} points ({2 * num_points} numbers), got {arr.size} numbers", line)
    with np.errstate(over="ignore"):
        arr = arr.reshape(num_points, 2).astype(np.float32)  # beyond float32 (~3.4e38) becomes inf
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise AnnotationError(path, f"point {int(np.flatnonzero(bad)[0])} is not a finite number", line)
    return arr


def parse_floats(tokens, path, line: int | None = None) -> list[float]:
    out = []
    for t in tokens:
        try:
            out.append(float(t))
        except ValueError:
            raise AnnotationError(path, f"{t!r} is not a number", line) from None
    return out


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Tight box x0, y0, x1, y1 around the points."""
    return np.array([*points.min(0), *points.max(0)], dtype=np.float32)
