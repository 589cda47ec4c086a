"""MediaPipe Face Mesh on whole images, for benchmarks/compare.py. Runs in its own venv.

MediaPipe 0.10.21 pins numpy<2, so it cannot live in the main environment. This script
runs with the MediaPipe venv's python and imports neither facepoints nor anything that
needs numpy>=2 (only the standard library, Pillow and MediaPipe's own numpy 1.x):

    python3 -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==0.10.21
    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py REQUESTS.json [--out RESULTS.json]
    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py --serve   # JSON lines (compare.py)

What runs: the legacy ``mp.solutions.face_mesh.FaceMesh(static_image_mode=True,
max_num_faces=--max-faces, refine_landmarks=False)``: MediaPipe's own face detector
(BlazeFace short range, on the whole image) then the 468-point mesh on every face it
finds. Both TFLite models ship inside the wheel; nothing is downloaded. Inference runs
on TFLite's XNNPACK delegate, whose default on desktop Linux is 1 thread (MediaPipe's
``GetXnnpackDefaultNumThreads``; the legacy solution API has no thread option). The
graph's scheduler owns a few threads, but one still image goes through detection and
mesh one after the other; every result carries the process CPU time next to the wall
time so that this can be checked (``cpu_ms / ms`` close to 1 means one busy thread).

Input (a file, or ``-`` for stdin): a JSON list whose items are an image path, or
``{"path": P, "box": [x0, y0, x1, y1] | null}``. A box (the tight box of the face's
ground-truth landmarks, say) picks which of the faces MediaPipe found is "the" face:
the one whose mapped 68-point tight box has the highest IoU with it, required to be
over ``--min-iou`` (else the face counts as missed). Without a box, the first face.

Timing: ``fm.process(rgb)`` on the decoded RGB image (decoding is not timed), i.e.
MediaPipe's face detection + mesh per whole image. Batch mode runs ``--warmup`` untimed
passes and then ``--repeats`` timed passes over the whole list, image after image (so
each image's repeats are spread over the run, not back to back), and reports each
image's median. In ``--serve`` mode the caller interleaves: one request per line,
``{"path", "box", "repeats"}``, one result line back; the first line out is a
``{"ready": true, ...}`` handshake.

Output per image: ``path``, ``width``, ``height``, ``n_faces`` (faces MediaPipe found),
``mesh468`` (the chosen face's 468 mesh points, ``[x, y]`` in pixels) and ``ibug68``
(the 68 iBUG points mapped from it) or ``null`` for both when no face was found /
matched, ``iou`` (with the given box), ``ms`` (per timed repeat), ``ms_median``,
``cpu_ms`` (process CPU time per repeat), and ``error`` when the image is unreadable.
Pixels are 0-based pixel centres (the facepoints / OpenCV convention): MediaPipe's
normalised coordinates span the image edges (0 = left edge of the first pixel), so
``x_px = x * width - 0.5`` (a half-pixel convention choice, well under the errors
measured).

The 468 -> 68 mapping (``MP_TO_IBUG68``) is the widely used correspondence of
Peizhi Yan's Mediapipe_2_Dlib_Landmarks (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks,
2024; the same table appears in several other projects): each iBUG point is one mesh
vertex or the mean of two. The mesh has no points defined the iBUG way, so the mapped
points are approximations of iBUG semantics: the jaw line (iBUG 0-16 follow the
visible cheek/jaw outline, the mesh vertices are fixed points on the 3D face surface,
which drift from the outline as the head turns) most of all, then the nose bridge,
the eyebrows (iBUG's upper brow edge vs the mesh's brow vertices) and the lip
contours. An NME of these points measures mapping + model, not the model alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# iBUG 68 index -> MediaPipe mesh vertex (or two, averaged). iBUG's "right" is the
# subject's right (image left for a frontal face), as is MediaPipe's.
MP_TO_IBUG68 = [
    # jaw 0-16, subject's right ear -> chin (8) -> left ear
    [127], [234], [93], [132, 58], [58, 172], [136], [150], [176], [152],
    [400], [379], [365], [397, 288], [361], [323], [454], [356],
    # right brow 17-21, left brow 22-26 (outer -> inner, inner -> outer)
    [70], [63], [105], [66], [107],
    [336], [296], [334], [293], [300],
    # nose bridge 27-30, lower nose 31-35
    [168, 6], [197, 195], [5], [4],
    [75], [97], [2], [326], [305],
    # right eye 36-41 (36 outer corner), left eye 42-47 (45 outer corner)
    [33], [160], [158], [133], [153], [144],
    [362], [385], [387], [263], [373], [380],
    # outer lips 48-59 (48 right corner, 51 top centre, 54 left corner, 57 bottom centre)
    [61], [39], [37], [0], [267], [269], [291],
    [321], [314], [17], [84], [91],
    # inner lips 60-67
    [78], [82], [13], [312], [308],
    [317], [14], [87],
]
assert len(MP_TO_IBUG68) == 68


def to_ibug68(mesh):
    """68 ``[x, y]`` from 468 (or 478) mesh points ``[x, y]``, by ``MP_TO_IBUG68``."""
    return [[sum(mesh[i][k] for i in idx) / len(idx) for k in (0, 1)] for idx in MP_TO_IBUG68]


def tight_box(points):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-9)


def read_rgb(path):
    """RGB uint8 array as a viewer shows it (EXIF rotation applied, alpha on white),
    the way facepoints' reader decodes, so that pixel coordinates agree."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


class Worker:
    def __init__(self, max_faces=1, min_iou=0.3, min_detection_confidence=0.5):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import mediapipe as mp

        self.version = mp.__version__
        self.max_faces, self.min_iou = max_faces, min_iou
        self.settings = dict(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=False,
                             min_detection_confidence=min_detection_confidence)
        self.mesh = mp.solutions.face_mesh.FaceMesh(**self.settings)

    def info(self):
        return {"mediapipe": self.version, "solution": "mp.solutions.face_mesh.FaceMesh",
                "settings": self.settings, "min_iou": self.min_iou,
                "threads": "TFLite XNNPACK delegate, MediaPipe's desktop default of 1 thread "
                           "(no thread option in the legacy API); see cpu_ms / ms",
                "mapping": "MP_TO_IBUG68 (Peizhi Yan's Mediapipe_2_Dlib_Landmarks table), "
                           "an approximation of iBUG semantics"}

    def run(self, rgb, repeats=1):
        """(faces, wall ms per repeat, CPU ms per repeat); faces as lists of 468 [x, y] px."""
        ms, cpu = [], []
        for _ in range(max(1, repeats)):
            c, t = time.process_time(), time.perf_counter()
            res = self.mesh.process(rgb)
            ms.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        h, w = rgb.shape[:2]
        faces = [[[p.x * w - 0.5, p.y * h - 0.5] for p in f.landmark] for f in (res.multi_face_landmarks or [])]
        return faces, ms, cpu

    def choose(self, faces, box):
        """The face matching ``box`` (best IoU of the mapped 68-point tight box, over
        ``min_iou``), the first face without a box; (mesh, ibug68, iou) or Nones."""
        if not faces:
            return None, None, None
        mapped = [to_ibug68(f) for f in faces]
        if box is None:
            return faces[0], mapped[0], None
        ious = [iou(tight_box(m), box) for m in mapped]
        k = max(range(len(faces)), key=ious.__getitem__)
        if ious[k] <= self.min_iou:
            return None, None, ious[k]
        return faces[k], mapped[k], ious[k]

    def result(self, req, rgb, faces, ms, cpu):
        mesh, ibug, match = self.choose(faces, req.get("box"))
        r = {"path": req["path"], "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
             "n_faces": len(faces), "mesh468": mesh, "ibug68": ibug, "iou": match,
             "ms": ms, "ms_median": statistics.median(ms) if ms else None, "cpu_ms": cpu}
        return r


def normalise_request(item):
    if isinstance(item, str):
        return {"path": item, "box": None}
    if not isinstance(item, dict) or "path" not in item:
        raise ValueError(f"request item must be a path or {{'path': ..., 'box': ...}}, got {item!r}")
    box = item.get("box")
    if box is not None and len(box) != 4:
        raise ValueError(f"{item['path']}: box must be [x0, y0, x1, y1], got {box!r}")
    return {**item, "box": None if box is None else [float(v) for v in box]}


def error_result(req, e):
    return {"path": req["path"], "error": f"{e.__class__.__name__}: {' '.join(str(e).split())[:300]}",
            "n_faces": 0, "mesh468": None, "ibug68": None, "iou": None, "ms": [], "ms_median": None,
            "cpu_ms": []}


def batch(worker, requests, repeats, warmup):
    requests = [normalise_request(r) for r in requests]
    images, faces, ms, cpu = {}, {}, {}, {}
    for i, req in enumerate(requests):
        try:
            images[i] = read_rgb(req["path"])
        except Exception as e:  # reported per image, the batch goes on
            images[i] = e
    for rep in range(warmup + repeats):
        for i, rgb in images.items():
            if isinstance(rgb, Exception):
                continue
            f, t, c = worker.run(rgb)
            if rep >= warmup:
                faces[i] = f
                ms.setdefault(i, []).extend(t)
                cpu.setdefault(i, []).extend(c)
    out = []
    for i, req in enumerate(requests):
        rgb = images[i]
        if isinstance(rgb, Exception):
            out.append(error_result(req, rgb))
        else:
            out.append(worker.result(req, rgb, faces.get(i, []), ms.get(i, []), cpu.get(i, [])))
    return out


def serve(worker, proto):
    """JSON lines: one request per stdin line, one result per line on ``proto``."""
    proto.write(json.dumps({"ready": True, **worker.info()}) + "\n")
    proto.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = normalise_request(json.loads(line))
        except (ValueError, TypeError) as e:
            proto.write(json.dumps({"error": f"bad request: {e}"}) + "\n")
            proto.flush()
            continue
        try:
            rgb = read_rgb(req["path"])
        except Exception as e:
            res = error_result(req, e)
        else:
            faces, ms, cpu = worker.run(rgb, int(req.get("repeats", 1)))
            res = worker.result(req, rgb, faces, ms, cpu)
        proto.write(json.dumps(res) + "\n")
        proto.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("requests", nargs="?", default="-", help="JSON list of paths or {path, box}; '-' for stdin")
    ap.add_argument("--out", default="-", help="where to write the JSON results ('-': stdout)")
    ap.add_argument("--serve", action="store_true", help="JSON lines over stdin/stdout (for compare.py)")
    ap.add_argument("--max-faces", type=int, default=1, help="FaceMesh max_num_faces (default 1)")
    ap.add_argument("--min-iou", type=float, default=0.3, help="IoU a found face needs with a given box")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes in batch mode (median per image)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes first in batch mode")
    args = ap.parse_args()

    # MediaPipe's C++ code may print to fd 1; keep the real stdout for JSON only.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(args.max_faces, args.min_iou)
    if args.serve:
        serve(worker, proto)
        return
    text = sys.stdin.read() if args.requests == "-" else open(args.requests).read()
    requests = json.loads(text)
    if not isinstance(requests, list):
        raise SystemExit("requests must be a JSON list")
    out = {**worker.info(), "repeats": args.repeats, "warmup": args.warmup,
           "results": batch(worker, requests, args.repeats, args.warmup)}
    if args.out == "-":
        proto.write(json.dumps(out) + "\n")
        proto.flush()
    else:
        with open(args.out, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
