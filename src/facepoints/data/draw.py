"""Drawing landmarks and boxes on images (RGB uint8)."""

from __future__ import annotations

import cv2
import numpy as np

RED, BLUE, GREEN, YELLOW = (230, 40, 40), (40, 90, 240), (40, 200, 60), (250, 210, 0)


def side_colours(scheme, n: int) -> list[tuple[int, int, int]]:
    """Red for the first point of each flip pair (the subject's right in the built-in
    schemes), blue for its mirror, green for points on the midline."""
    colours = [GREEN] * n
    if scheme is not None and scheme.has_flip and scheme.num_points == n:
        for a, b in scheme.flip_pairs:
            colours[min(a, b)], colours[max(a, b)] = RED, BLUE
    return colours


def draw_faces(image: np.ndarray, faces: list, scheme=None, scores: bool = True) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and landmarks drawn (any objects
    with ``landmarks``, and ``box``, ``score`` and ``visible`` that may be None); points
    with a visibility under 0.5 are drawn as rings."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    for face in faces:
        pts = np.asarray(face.landmarks, dtype=np.float32)
        box, score = getattr(face, "box", None), getattr(face, "score", None) if scores else None
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), YELLOW, thick)
            if score is not None:
                cv2.putText(out, f"{score:.2f}", (x0, max(0, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4 * thick, YELLOW, thick, cv2.LINE_AA)
        visible = getattr(face, "visible", None)
        seen = np.ones(len(pts), bool) if visible is None else np.asarray(visible) >= 0.5
        for (x, y), c, v in zip(pts, side_colours(scheme, len(pts)), seen):
            # a point the model says is hidden (covered, turned away) is drawn hollow
            cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, c, -1 if v else max(1, thick // 2), cv2.LINE_AA)
    return out
