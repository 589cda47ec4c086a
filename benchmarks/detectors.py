#!/usr/bin/env python
"""Benchmark the face detectors of ``facepoints.inference.detectors`` on 300-W.

For every detector (default settings), on 300-W AFW (all faces) and HELEN trainset
(every ``--helen-every``-th face):

* recall: a ground-truth face counts as found when a detection, mapped by the
  detector's calibration (``to_landmark_box`` convention), has IoU >= 0.5 with the
  tight box of its 68 landmarks; also the raw recall "the landmark-box centre lies
  inside a raw detection box";
* other detections per image: detections whose calibrated box has IoU < 0.3 with
  the annotated face. Each 300-W image annotates one face but may show others, so
  this is an upper bound on false positives;
* mean milliseconds per ``detect`` call with one thread (cv2.setNumThreads(1),
  OMP_NUM_THREADS=1 for yuface's OpenMP);
* the calibration (dx, dy, sw, sh) fitted on AFW: for each face, the raw detection
  containing the landmark-box centre with the highest IoU; median of the per-face
  ratios. HELEN reports the IoU before and after applying the AFW fit.

A last table checks faces cut by the image border (AFW images cropped so that the
left 30 % of the landmark box lies outside), with and without border padding.

Data are read in place from the shared folder and never copied. Usage::

    python benchmarks/detectors.py [--data /work/shared/data] [--helen-every 2] [--out benchmarks/detectors.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before yuface's libgomp loads

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepoints.evaluation.machine import command_line, report_header
from facepoints.data.crops import box_iou
from facepoints.data.formats import read_pts
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.inference.detectors import DETECTORS, BoxCalibration, get_detector

DETECTORS_DEFAULT = list(DETECTORS)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


@dataclass
class Face:
    image: Path
    box: np.ndarray  # tight 68-landmark box, x0 y0 x1 y1


def load_faces(folder: Path, every: int = 1) -> list[Face]:
    faces = []
    for pts in sorted(folder.glob("*.pts"))[::every]:
        img = next((p for p in (pts.with_suffix(s) for s in (".jpg", ".png")) if p.is_file()), None)
        if img is None:
            continue
        faces.append(Face(img, landmark_box(read_pts(pts))))
    return faces


def centre_inside(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    b = np.asarray(boxes).reshape(-1, 4)
    return (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])


def match(raw: np.ndarray, gt: np.ndarray) -> int | None:
    """Index of the raw detection containing the GT centre with the highest IoU."""
    inside = np.flatnonzero(centre_inside(raw, gt))
    if not len(inside):
        return None
    return int(inside[np.argmax(box_iou(raw[inside], gt))])


def run_detector(det, faces: list[Face], images: dict) -> tuple[list[np.ndarray], float]:
    det.detect(images[faces[0].image])  # warm-up, not timed
    out, total = [], 0.0
    for f in faces:
        img = images[f.image]
        t = time.perf_counter()
        d = det.detect(img)
        total += time.perf_counter() - t
        out.append(d.boxes)
    return out, 1000 * total / len(faces)


def evaluate(raw: list[np.ndarray], faces: list[Face], cal: BoxCalibration) -> dict:
    found = centre = others = 0
    ious_raw, ious_cal, cerr, sratio = [], [], [], []
    for boxes, f in zip(raw, faces):
        gt = f.box
        calb = cal.apply(boxes) if len(boxes) else boxes
        ov = box_iou(calb, gt) if len(boxes) else np.zeros(0)
        found += bool(len(ov) and ov.max() >= 0.5)
        centre += bool(centre_inside(boxes, gt).any())
        others += int((ov < 0.3).sum())
        m = match(boxes, gt)
        if m is not None:
            ious_raw.append(box_iou(boxes[m], gt)[0])
            ious_cal.append(ov[m])
            c = calb[m]
            side = max(gt[2] - gt[0], gt[3] - gt[1])
            cerr.append(np.hypot((c[0] + c[2] - gt[0] - gt[2]) / 2, (c[1] + c[3] - gt[1] - gt[3]) / 2) / side)
            sratio.append(max(c[2] - c[0], c[3] - c[1]) / side)
    n = len(faces)
    return dict(n=n, recall=found / n, centre=centre / n, others=others / n, matched=len(ious_cal),
                iou_raw=float(np.mean(ious_raw)) if ious_raw else float("nan"),
                iou_cal=float(np.mean(ious_cal)) if ious_cal else float("nan"),
                cerr_med=float(np.median(cerr)) if cerr else float("nan"),
                cerr_p90=float(np.percentile(cerr, 90)) if cerr else float("nan"),
                side_p10=float(np.percentile(sratio, 10)) if sratio else float("nan"),
                side_p90=float(np.percentile(sratio, 90)) if sratio else float("nan"))


def fit(raw: list[np.ndarray], faces: list[Face]) -> BoxCalibration:
    det, tgt = [], []
    for boxes, f in zip(raw, faces):
        m = match(boxes, f.box)
        if m is not None:
            det.append(boxes[m])
            tgt.append(f.box)
    return BoxCalibration.fit(np.array(det), np.array(tgt))


def cut_left(faces: list[Face], images: dict, frac: float = 0.3) -> tuple[list[Face], dict]:
    """Crop each image so the left ``frac`` of its face's landmark box is outside."""
    out, imgs = [], {}
    for f in faces:
        x = int(round(f.box[0] + frac * (f.box[2] - f.box[0])))
        img = images[f.image]
        if x <= 0 or x >= img.shape[1] - 8:
            continue
        key = Path(f"{f.image}#cut")
        imgs[key] = np.ascontiguousarray(img[:, x:])
        out.append(Face(key, f.box - np.array([x, 0, x, 0], np.float32)))
    return out, imgs


def parse_spec(spec: str) -> tuple[str, dict]:
    """``yunet:pad=0:score_threshold=0.6`` -> ("yunet", {"pad": 0.0, ...})."""
    name, *opts = spec.split(":")
    kwargs = {}
    for opt in opts:
        k, v = opt.split("=", 1)
        kwargs[k] = float(v) if any(c in v for c in ".e") or k in ("pad", "score_threshold", "threshold") else int(v)
    return name, kwargs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--helen-every", type=int, default=2, help="take every N-th HELEN trainset face (default 2)")
    ap.add_argument("--border-n", type=int, default=80, help="AFW faces for the border-cut check (0 to skip)")
    ap.add_argument("--detectors", default=",".join([DETECTORS_DEFAULT[0], "yunet:pad=0", *DETECTORS_DEFAULT[1:]]),
                    help="comma-separated registry names, optionally NAME:KEY=VALUE:... for non-default settings")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "detectors.md")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    t_start = time.perf_counter()

    afw = load_faces(args.data / "300w" / "afw")
    helen = load_faces(args.data / "300w" / "helen" / "trainset", args.helen_every)
    n_helen_all = len(list((args.data / "300w" / "helen" / "trainset").glob("*.pts")))
    if not afw or not helen:
        sys.exit(f"no 300-W faces under {args.data}")
    images = {f.image: read_image(f.image) for f in afw + helen}
    cut, cut_images = cut_left(afw[: args.border_n], images) if args.border_n else ([], {})
    images.update(cut_images)
    print(f"AFW {len(afw)} faces, HELEN {len(helen)}/{n_helen_all}, border-cut {len(cut)}", flush=True)

    rows, border_rows, cals = [], [], {}
    for spec in args.detectors.split(","):
        name, kwargs = parse_spec(spec)
        try:
            det = get_detector(name, **kwargs)
        except ImportError as e:
            print(f"skip {spec}: {e}")
            continue
        raw_afw, ms_afw = run_detector(det, afw, images)
        raw_helen, ms_helen = run_detector(det, helen, images)
        cal = fit(raw_afw, afw)
        cals[name] = cal
        ea, eh = evaluate(raw_afw, afw, cal), evaluate(raw_helen, helen, cal)
        ms = (ms_afw * len(afw) + ms_helen * len(helen)) / (len(afw) + len(helen))
        rows.append((spec, cal, ea, eh, ms))
        note = ("matches" if cal == type(det).calibration else "DIFFERS FROM") if not kwargs else "variant; compare"
        print(f"{spec}: fit {cal} ({note} the module's {type(det).calibration}); "
              f"AFW recall {ea['recall']:.3f} HELEN {eh['recall']:.3f} iou {eh['iou_raw']:.3f}->{eh['iou_cal']:.3f} "
              f"{ms:.1f} ms", flush=True)
        if cut and not kwargs:
            for pad in sorted({0.0, 0.25, det.pad} | ({0.1} if name == "yunet" else set())):
                d = get_detector(name, pad=pad)
                raw_cut, ms_cut = run_detector(d, cut, images)
                border_rows.append((name, pad, evaluate(raw_cut, cut, cal), ms_cut))

    elapsed = time.perf_counter() - t_start
    write_report(args, rows, border_rows, len(afw), len(helen), n_helen_all, len(cut), elapsed)
    print(f"wrote {args.out} in {elapsed:.0f} s")
    return 0


def write_report(args, rows, border_rows, n_afw, n_helen, n_helen_all, n_cut, elapsed) -> None:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [
        *report_header("Face detectors on 300-W", command_line(__file__),
                       f"pinned to 1 thread; took {elapsed:.0f} s")[:-1],
        f"Data: 300-W AFW, all {n_afw} faces; HELEN trainset, one face in {args.helen_every} (sorted by name) "
        f"({n_helen} of {n_helen_all}) to keep the run short. Each image annotates one face "
        "(the 300-W images are crops with that face at about half the image side) but may show others.",
        "",
        "Every detector with its default settings (`get_detector(name)`); `yunet:pad=0` is YuNet without the "
        "second, padded pass for faces touching the border (see the last table). *Recall@0.5*: a detection, mapped "
        "by the calibration below, has IoU >= 0.5 with the tight box of the 68 landmarks. *Centre recall*: the "
        "centre of that box lies inside a raw detection. *Other/img*: detections with calibrated IoU < 0.3 with "
        "the annotated face, per image; unannotated faces count here, so it bounds false positives from above. "
        "*ms/img*: mean wall time of `detect()` with one thread (`cv2.setNumThreads(1)`, `OMP_NUM_THREADS=1`) "
        "on AFW and HELEN together; the 2-core machine was shared with other work, so timings are indicative.",
        "",
        "| detector | AFW recall@0.5 | AFW centre recall | AFW other/img | HELEN recall@0.5 | HELEN centre recall "
        "| HELEN other/img | ms/img |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cal, ea, eh, ms in rows:
        lines.append(f"| {name} | {pct(ea['recall'])} % | {pct(ea['centre'])} % | {ea['others']:.2f} | "
                     f"{pct(eh['recall'])} % | {pct(eh['centre'])} % | {eh['others']:.2f} | {ms:.1f} |")
    lines += [
        "",
        "## Calibration to the tight 68-landmark box",
        "",
        "Fitted on AFW: for each face, the raw detection containing the landmark-box centre with the highest IoU; "
        "constants are medians of the per-face ratios (centre shift `dx`, `dy` as fractions of the detector box "
        "width/height, size ratios `sw`, `sh`). They are written into `src/facepoints/inference/detectors.py`. "
        "AFW recall@0.5 above is therefore in-sample; HELEN is held out. Mean IoU is over the faces matched by "
        "centre; the centre error is the distance between box centres over the longer side of the landmark box "
        "(what the square crop uses), and the side ratio is calibrated longer side / landmark-box longer side.",
        "",
        "| detector | dx | dy | sw | sh | AFW matched | AFW mean IoU raw -> cal. | HELEN matched "
        "| HELEN mean IoU raw -> cal. | HELEN centre err. median / p90 | HELEN side ratio p10-p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cal, ea, eh, ms in rows:
        lines.append(
            f"| {name} | {cal.dx:+.4f} | {cal.dy:+.4f} | {cal.sw:.4f} | {cal.sh:.4f} | {ea['matched']}/{ea['n']} | "
            f"{ea['iou_raw']:.3f} -> {ea['iou_cal']:.3f} | {eh['matched']}/{eh['n']} | "
            f"{eh['iou_raw']:.3f} -> {eh['iou_cal']:.3f} | {pct(eh['cerr_med'])} % / {pct(eh['cerr_p90'])} % | "
            f"{eh['side_p10']:.2f}-{eh['side_p90']:.2f} |")
    if border_rows:
        lines += [
            "",
            "## Faces cut by the image border",
            "",
            f"The first {args.border_n} AFW images ({n_cut} usable), each cropped so that the left 30 % of the "
            "landmark box lies outside the image; ground truth keeps its (negative) coordinates. `pad`: border "
            "added (replicated edge pixels, as a fraction of the longer side) in a second pass when a detection "
            "touches the edge (`pad_mode='auto'`); 0 turns it off. Calibrated boxes, AFW constants.",
            "",
            "| detector | pad | recall@0.5 | centre recall | mean IoU (matched) | centre err. median | ms/img |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, pad, e, ms in border_rows:
            lines.append(f"| {name} | {pad:g} | {pct(e['recall'])} % | {pct(e['centre'])} % | {e['iou_cal']:.3f} | "
                         f"{pct(e['cerr_med'])} % | {ms:.1f} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
