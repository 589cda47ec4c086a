"""Video files in, RGB frames out: one reader for every stage that takes a video
(``facepoints label`` on clips, ``facepoints track``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from facepoints.errors import FacepointsError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class VideoError(FacepointsError, ValueError):
    """A video that cannot be read; the message names the file."""


def read_video(path) -> tuple[float, Iterator[np.ndarray]]:
    """``(fps, frames)``: the frame rate (30 when the file does not say) and an iterator
    of RGB uint8 frames. Raises :class:`VideoError` naming the file when it is missing,
    cannot be opened as a video or has no frames; the first frame is read here."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: cannot open as a video (not a video, or a codec OpenCV cannot decode)")
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise VideoError(f"{path}: the video has no frames")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        fps = 30.0

    def frames():
        frame = first
        try:
            while True:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = cap.read()
                if not ok or frame is None:
                    return
        finally:
            cap.release()

    return fps, frames()
