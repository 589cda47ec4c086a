#!/usr/bin/env python
"""Landmark jitter on video, with and without One Euro smoothing (``facepoints track``).

From every photo in ``examples/`` two synthetic 30 fps clips are made:

* **still**: the same photo for ``--frames`` frames, each with Gaussian sensor noise
  (sigma ``--noise`` grey levels) and a random sub-pixel translation (uniform in a
  disc of radius 0.5 px, bilinear): the face does not move, so any motion of the
  landmarks is jitter;
* **moving**: the photo translated by ``--speed`` px per frame to the right (same
  noise), to show what smoothing costs in lag.

The :class:`facepoints.inference.tracking.Tracker` (``--model``: the bundled default
unless given, with the detector its file recommends; default settings, 1 thread) runs
once per clip with smoothing on. The smoothed landmarks come
from the raw ones by a filter that never feeds back into the crops, so the raw
landmarks of the same run *are* the run without smoothing (checked against a
``smooth=False`` run on the first clip). The filter grid at the end re-filters the
recorded raw landmarks offline (exactly what the tracker does) for other
``min_cutoff`` / ``beta`` values.

Metrics, per face track present in every frame, then averaged over faces:

* jitter: :func:`facepoints.inference.tracking.jitter`, the mean frame-to-frame
  displacement of the points, in % of the inter-ocular distance and in px;
* lag (moving clip): the reference is the mean raw answer on the still clip with the
  known sub-pixel shifts taken out (the model's answer for the unshifted photo), moved
  by the known translation; *error* = mean point distance to it, *lag* = the mean
  component of (reference - landmarks) along the motion (positive: behind).

Usage (from the repository root, project venv)::

    python benchmarks/tracking.py [--frames 60] [--noise 3] [--speed 1] [--out benchmarks/tracking.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before yuface's libgomp loads

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 30.0
GRID_MIN_CUTOFF = (0.5, 1.0, 2.0)
GRID_BETA = (0.0, 10.0, 30.0, 100.0)


def make_clip(img: np.ndarray, n: int, noise: float, rng, speed: float = 0.0, shake: float = 0.5):
    """Frames (RGB uint8) and the translation (n, 2) applied to each."""
    h, w = img.shape[:2]
    frames, shifts = [], []
    for k in range(n):
        if speed:
            t = np.array([k * speed, 0.0])
        else:
            r, a = shake * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            t = np.array([r * np.cos(a), r * np.sin(a)])
        m = np.float32([[1, 0, t[0]], [0, 1, t[1]]])
        f = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        f = f.astype(np.float32) + rng.standard_normal(f.shape, dtype=np.float32) * noise
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
        shifts.append(t)
    return frames, np.array(shifts)


TRACK_SECONDS = [0.0, 0]  # time spent in Tracker.update, frames: the tracker's own speed


def run_tracker(tracker, frames):
    """{track_id: (raw (F, P, 2), smoothed (F, P, 2), error radii per frame (each (P,) or
    None))} for tracks present in every frame."""
    raw, smooth, radii = {}, {}, {}
    for f in frames:
        t = time.perf_counter()
        faces = tracker.update(f)
        TRACK_SECONDS[0] += time.perf_counter() - t
        TRACK_SECONDS[1] += 1
        for face in faces:
            raw.setdefault(face.track_id, []).append(face.raw)
            smooth.setdefault(face.track_id, []).append(face.landmarks)
            radii.setdefault(face.track_id, []).append(face.error_radius)
    n = len(frames)
    return {i: (np.array(raw[i]), np.array(smooth[i]), radii[i]) for i in raw if len(raw[i]) == n}


def refilter(raw: np.ndarray, radii: list, min_cutoff: float, beta: float) -> np.ndarray:
    """The tracker's smoothing applied offline to a track's raw landmarks (with a trust
    model's ``radii`` per frame, less-trusted points smoothed more, as the tracker does)."""
    from types import SimpleNamespace

    from facepoints.data.samples import landmark_box
    from facepoints.inference.tracking import D_CUTOFF, OneEuroFilter, point_trust

    f = OneEuroFilter(min_cutoff, beta, D_CUTOFF, FPS)
    out = []
    for p, r in zip(raw, radii):
        b = landmark_box(p)
        out.append(f(p, scale=max(float(max(b[2] - b[0], b[3] - b[1])), 1.0),
                     trust=point_trust(SimpleNamespace(error_radius=r))).astype(np.float32))
    return np.array(out)


def io_distance(points: np.ndarray) -> np.ndarray:
    from facepoints.evaluation.metrics import normaliser

    return normaliser(points, "ibug68", "io")


def lag_stats(pts: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(error px, error % io, lag px along +x) of (F, P, 2) points against ``ref``."""
    d = ref - pts
    err = np.linalg.norm(d, axis=-1).mean(axis=1)
    io = io_distance(ref)
    return float(err.mean()), float((err / io).mean() * 100), float(d[..., 0].mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--noise", type=float, default=3.0, help="sensor noise sigma, grey levels")
    ap.add_argument("--speed", type=float, default=1.0, help="moving clip: px per frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default", help="a bundled model by name, or a model file")
    ap.add_argument("--busy", action="store_true", help="say in the report that other work shared the CPU")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tracking.md")
    args = ap.parse_args(argv)

    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    import facepoints
    from facepoints.data.images import read_image
    from facepoints.inference.tracking import BETA, D_CUTOFF, MIN_CUTOFF, Tracker, jitter
    from facepoints.evaluation.machine import command_line, report_header

    t_start = time.time()
    cpu_start = time.process_time()
    predictor = facepoints.load(args.model, threads=1)
    rng = np.random.default_rng(args.seed)
    photos = sorted((ROOT / "examples").glob("*.jpg"))
    rows, records, detector_calls, n_frames = [], [], 0, 0
    checked = False
    for photo in photos:
        img = read_image(photo)
        still, shifts = make_clip(img, args.frames, args.noise, rng)
        moving, moves = make_clip(img, args.frames, args.noise, rng, speed=args.speed)
        tr = Tracker(predictor, fps=FPS)
        s_tracks = run_tracker(tr, still)
        detector_calls += tr.detector_calls
        if not checked:  # the raw landmarks of a smoothed run are the unsmoothed run
            plain = run_tracker(Tracker(predictor, fps=FPS, smooth=False), still)
            for i, (raw, _, _) in s_tracks.items():
                assert np.array_equal(plain[i][1], raw), "smooth=False differs from the raw landmarks"
            checked = True
        tr = Tracker(predictor, fps=FPS)
        m_tracks = run_tracker(tr, moving)
        detector_calls += tr.detector_calls
        n_frames += 2 * args.frames
        if len(s_tracks) != len(m_tracks):
            print(f"{photo.name}: {len(s_tracks)} still vs {len(m_tracks)} moving full-length tracks", file=sys.stderr)
        for i, (raw, smooth, radii) in s_tracks.items():
            ref = (raw - shifts[:, None, :]).mean(axis=0)  # the model's answer for the unshifted photo
            # the moving clip's track on the same face: nearest mean position at frame 0
            j = min(m_tracks, key=lambda j: np.abs(m_tracks[j][0][0] - raw[0]).mean(), default=None)
            if j is None:
                continue
            mraw, msmooth, mradii = m_tracks[j]
            mref = ref[None] + moves[:, None, :]
            io = float(io_distance(ref[None])[0])
            rec = {"photo": photo.name, "track": i, "io": io, "still_raw": raw, "still_smooth": smooth,
                   "still_radii": radii, "moving_raw": mraw, "moving_radii": mradii, "mref": mref}
            records.append(rec)
            rows.append((photo.name, i, io,
                         jitter(raw) * 100, jitter(smooth) * 100, jitter(raw, normalise=False), jitter(smooth, normalise=False),
                         *lag_stats(mraw, mref), *lag_stats(msmooth, mref)))
            print(f"{photo.name} #{i}: io {io:.0f} px, jitter raw {rows[-1][3]:.2f} % smooth {rows[-1][4]:.2f} %, "
                  f"lag raw {rows[-1][9]:.2f} px smooth {rows[-1][12]:.2f} px", file=sys.stderr)
    elapsed, cpu = time.time() - t_start, time.process_time() - cpu_start
    shake = float(np.linalg.norm(np.diff(shifts, axis=0), axis=1).mean())

    a = np.array([r[2:] for r in rows])
    mean = a.mean(axis=0)
    grid = []
    for mc in GRID_MIN_CUTOFF:
        for b in GRID_BETA:
            js, jp, ls, es = [], [], [], []
            for rec in records:
                s = refilter(rec["still_raw"], rec["still_radii"], mc, b)
                m = refilter(rec["moving_raw"], rec["moving_radii"], mc, b)
                js.append(jitter(s) * 100)
                jp.append(jitter(s, normalise=False))
                e, _, lag = lag_stats(m, rec["mref"])
                es.append(e)
                ls.append(lag)
            grid.append((mc, b, np.mean(js), np.mean(jp), np.mean(es), np.mean(ls)))
    # the offline filter is the tracker's filter
    for rec in records:
        assert np.allclose(refilter(rec["still_raw"], rec["still_radii"], MIN_CUTOFF, BETA), rec["still_smooth"],
                           atol=1e-3)

    lines = [
        *report_header("Landmark jitter on video: One Euro smoothing",
                       command_line(__file__, argv, prefix="OMP_NUM_THREADS=1 "),
                       f"pinned to 1 thread; {elapsed:.0f} s wall, {cpu:.0f} s CPU, "
                       + ("on a machine shared with a training run" if args.busy else "nothing else running"))[:-1],
        f"Speed: {TRACK_SECONDS[1]} frames through `Tracker.update` in {TRACK_SECONDS[0]:.1f} s: "
        f"**{TRACK_SECONDS[1] / max(TRACK_SECONDS[0], 1e-9):.0f} frames per second** (1 thread, all faces of a frame, "
        "detection on the frames that need it included).  ",
        f"Model: `{args.model}` (ONNX Runtime; {'flip TTA' if predictor.flip else 'no flip'}, refine {predictor.refine}, "
        f"as the model file recommends), detector {predictor.detector.name}, "
        f"`Tracker` defaults: re-detection every 30 frames, One Euro `min_cutoff` {MIN_CUTOFF:g} Hz, "
        f"`beta` {BETA:g}, `d_cutoff` {D_CUTOFF:g} Hz (speed in face sizes per second), {FPS:g} fps.",
        "",
        f"Clips: from each of the {len(photos)} photos in `examples/` (native size), {args.frames} frames of a "
        f"**still** face (Gaussian noise sigma {args.noise:g} grey levels and a random translation of at most "
        f"0.5 px per frame, bilinear; the shift itself moves {shake:.2f} px per frame on average) and "
        f"{args.frames} frames of a **moving** face ({args.speed:g} px per frame to the right, same noise). "
        f"{n_frames} frames, {detector_calls} detector calls in all. *Raw* is the tracker without smoothing "
        "(the same run: smoothing never feeds back into the crops; checked against `smooth=False`).",
        "",
        "*Jitter*: `facepoints.inference.tracking.jitter`, the mean frame-to-frame displacement of the 68 points, "
        "in % of the inter-ocular distance (outer eye corners) and in px, on the still clip. *Error* and *lag* "
        "on the moving clip: against the reference = the mean raw answer on the still clip (known shifts taken "
        "out) moved by the known translation; error is the mean point distance, lag the mean component "
        "of (reference - landmarks) along the motion (positive: behind).",
        "",
        "## Summary (mean over faces)",
        "",
        "| | jitter % io | jitter px | moving: error px | moving: error % io | moving: lag px |",
        "|---|---:|---:|---:|---:|---:|",
        f"| raw (no smoothing) | {mean[1]:.2f} | {mean[3]:.2f} | {mean[5]:.2f} | {mean[6]:.2f} | {mean[7]:+.2f} |",
        f"| One Euro (defaults) | {mean[2]:.2f} | {mean[4]:.2f} | {mean[8]:.2f} | {mean[9]:.2f} | {mean[10]:+.2f} |",
        "",
        f"Smoothing divides the jitter by {mean[1] / mean[2]:.1f}; at {args.speed:g} px per frame it costs "
        f"{mean[10] - mean[7]:.2f} px of lag.",
        "",
        f"The raw landmarks partly follow the sub-pixel shake of the still clip ({shake:.2f} px per frame), which "
        "counts as jitter here since the face is meant to be still. On the moving clip the face of "
        "`obama_cut_by_border.jpg` comes out from behind the image border as it moves, so the model's answer "
        "itself changes (its large error with or without smoothing); the lag smoothing adds is the difference "
        "of the two lag columns.",
        "",
        "## Per face",
        "",
        "| photo | track | inter-ocular px | jitter raw % | jitter smoothed % | jitter raw px | jitter smoothed px "
        "| moving error raw px | moving error smoothed px | moving lag raw px | moving lag smoothed px |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} "
                     f"| {r[7]:.2f} | {r[10]:.2f} | {r[9]:+.2f} | {r[12]:+.2f} |")
    lines += [
        "",
        "## Filter settings",
        "",
        "The recorded raw landmarks re-filtered offline with other settings (`d_cutoff` "
        f"{D_CUTOFF:g} Hz); `facepoints track --min-cutoff F --beta F` chooses them. Mean over faces.",
        "",
        "| min_cutoff Hz | beta | jitter % io | jitter px | moving error px | moving lag px |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for mc, b, j, jp, e, lag in grid:
        mark = " (default)" if (mc, b) == (MIN_CUTOFF, BETA) else ""
        lines.append(f"| {mc:g}{mark} | {b:g} | {j:.2f} | {jp:.2f} | {e:.2f} | {lag:+.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
