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


# by the output's suffix: the codecs to try, best first (H.264 plays in every browser,
# VP9 / VP8 in WebM in all current ones; mp4v is the fallback OpenCV always has)
VIDEO_CODECS = {".mp4": ("avc1", "mp4v"), ".m4v": ("avc1", "mp4v"), ".mov": ("avc1", "mp4v"),
                ".webm": ("VP90", "VP80"), ".avi": ("MJPG",), ".mkv": ("avc1", "VP90", "mp4v")}


def open_video_writer(path, fps: float, size: tuple[int, int]):
    """``(cv2.VideoWriter, codec)`` for ``path`` with the first codec OpenCV accepts
    (:data:`VIDEO_CODECS`; mp4v for other suffixes), or ``(None, None)``."""
    import os
    from pathlib import Path as _Path

    import cv2

    # OpenCV's FFmpeg backend prints a line for every codec it refuses; those are expected here
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    for codec in VIDEO_CODECS.get(_Path(path).suffix.lower(), ("mp4v",)):
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), tuple(int(v) for v in size))
        if w.isOpened():
            return w, codec
        w.release()
    return None, None
