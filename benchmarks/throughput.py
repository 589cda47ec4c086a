"""Throughput of batch jobs: images per second for 1 and all workers, against dlib and
MediaPipe in the same run; every input exactly once after kill -9; Ray against local.

    python benchmarks/throughput.py [--photos 300w:../shared/data/300w/helen/trainset ...]
        [--peer-every 8] [--rounds 2] [--ray-images 200] [--out benchmarks/throughput.md]

What is timed: whole jobs as a user runs them, wall clock from start to exit:
``facepoints predict @MANIFEST --jsonl OUT --workers N --model M`` (process start,
model load, decoding, detection, landmarks, JSON lines; no progress bar). dlib (HOG
detector upsampled once + the 68-point ERT on every face found) and MediaPipe Face Mesh
(its own detector + mesh, in its own venv, decoding inside its worker) run the same
images in loops in 1 and 2 processes. Photos: the 300-W sets given (AFW, HELEN train and
LFPW train by default: 2,012 photos, decoded at their own size); the peers are slow on large
photos, so they run every ``--peer-every``-th photo, and facepoints runs that subset
too (1 worker), for the side-by-side ratios. Methods take turns: each round runs every
job once, the next round in reverse order, and a job's rate is its total images over
its total time.

Also checked: a fast-model job killed with SIGKILL at about half of its lines and run
again on the same --jsonl file has every input exactly once with the records of an
uninterrupted run; ``--engine ray`` (a local Ray instance) on ``--ray-images`` photos
gives the local path's landmarks (largest difference in px).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def facepoints_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "facepoints"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "facepoints.cli"]


def run_job(manifest: Path, out: Path, model: str, workers: int, extra=()) -> float:
    """Wall seconds of one predict job (a fresh --jsonl file)."""
    out.unlink(missing_ok=True)
    cmd = [*facepoints_cmd(), "predict", f"@{manifest}", "--jsonl", str(out), "--workers", str(workers),
           "--model", model, "--no-progress", *extra]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ------------------------------------------------------------------------ peers

_DLIB = None


def _dlib_init():
    global _DLIB
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    os.environ["OMP_NUM_THREADS"] = "1"
    from facepoints.curation.labeling import dlib_landmarker

    _DLIB = dlib_landmarker()


def _dlib_one(path: str) -> int:
    from facepoints.data.images import read_image

    img = read_image(path)
    boxes = _DLIB.hog_boxes(img)
    for b in boxes:
        _DLIB.raw(img, b)
    return len(boxes)


def dlib_job(paths: list[str], workers: int) -> float:
    t = time.perf_counter()
    if workers == 1:
        _dlib_init()
        for p in paths:
            _dlib_one(p)
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_dlib_init) as pool:
            list(pool.imap(_dlib_one, paths, chunksize=4))
    return time.perf_counter() - t


def mediapipe_job(python: Path, paths: list[str], workers: int) -> float:
    """MediaPipe Face Mesh (as benchmarks/compare.py runs it) over ``paths`` in ``workers``
    worker processes fed in parallel; wall seconds including each worker's start."""
    from concurrent.futures import ThreadPoolExecutor

    from compare import MediaPipeWorker

    def part(chunk):
        w = MediaPipeWorker(python, max_faces=4)
        try:
            for p in chunk:
                w(p)
        finally:
            w.close()

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(part, [paths[i::workers] for i in range(workers)]))
    return time.perf_counter() - t


# ------------------------------------------------------------------------ checks

def kill_check(manifest: Path, n: int, tmp: Path, reference: list[dict]) -> str:
    """SIGKILL a 2-worker fast job at about half its lines, re-run it: each input once,
    the same records as the uninterrupted run."""
    out = tmp / "killed.jsonl"
    out.unlink(missing_ok=True)
    cmd = [*facepoints_cmd(), "predict", f"@{manifest}", "--jsonl", str(out), "--workers", "2", "--model", "fast",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= n // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    cut = out.read_bytes().count(b"\n") if out.exists() else 0
    r = subprocess.run(cmd, capture_output=True, text=True)
    got = records(out)
    images = [x["image"] for x in got]
    ref = {x["image"]: x for x in reference}
    once = len(images) == len(set(images)) == n and set(images) == set(ref)
    same = all(json.dumps(x, sort_keys=True) == json.dumps(ref[x["image"]], sort_keys=True) for x in got)
    said = next((line for line in r.stderr.splitlines() if "already done" in line), "")
    return (f"killed with SIGKILL after {cut} of {n} lines; the re-run said \"{said.strip()}\"; "
            f"after it: {len(images)} lines, {len(set(images))} distinct inputs, every input exactly once: "
            f"**{'yes' if once else 'NO'}**, records identical to the uninterrupted run's: **{'yes' if same else 'NO'}**")


def ray_check(paths: list[str], tmp: Path) -> str:
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return "not run: Ray is not installed (pip install 'facepoints[ray]')"
    manifest = tmp / "ray.txt"
    manifest.write_text("\n".join(paths) + "\n")
    t = time.perf_counter()
    run_job(manifest, tmp / "ray.jsonl", "default", 2, ["--engine", "ray"])
    ray_s = time.perf_counter() - t
    run_job(manifest, tmp / "ray-local.jsonl", "default", 2)
    a = {x["image"]: x for x in records(tmp / "ray.jsonl")}
    b = {x["image"]: x for x in records(tmp / "ray-local.jsonl")}
    worst, faces = 0.0, 0
    for k, x in b.items():
        y = a[k]
        assert len(x.get("faces", [])) == len(y.get("faces", [])), k
        for fx, fy in zip(x.get("faces", []), y.get("faces", [])):
            worst = max(worst, float(np.abs(np.array(fx["landmarks"]) - np.array(fy["landmarks"])).max()))
            faces += 1
    return (f"{len(paths)} photos, {faces} faces, default model, 2 Ray actors vs 2 worker processes: "
            f"the same images in the same order: **{list(a) == list(b)}**, largest landmark difference "
            f"**{worst:.3f} px** (the bar: 0.01); the Ray job took {ray_s:.0f} s with Ray's start")


# ------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = ROOT.parent / "shared" / "data" / "300w"
    ap.add_argument("--photos", nargs="+", default=[str(shared / "afw"), str(shared / "helen" / "trainset"),
                                                    str(shared / "lfpw" / "trainset")],
                    help="folders of photos (every .jpg/.png in them)")
    ap.add_argument("--peer-every", type=int, default=8, help="dlib and MediaPipe run every N-th photo")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ray-images", type=int, default=200)
    ap.add_argument("--mediapipe-python", type=Path, default=ROOT / ".venv-mediapipe" / "bin" / "python")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "throughput.md")
    ap.add_argument("--note", default="nothing else running")
    args = ap.parse_args(argv)
    import onnxruntime  # noqa: F401  (its version goes into the header)

    from facepoints.data.images import IMAGE_SUFFIXES
    from facepoints.evaluation.machine import command_line, report_header

    paths = sorted(str(p) for d in args.photos for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        print(f"no photos in {args.photos}: nothing measured")
        return 2
    peers = paths[:: args.peer_every]
    tmp = Path(tempfile.mkdtemp(prefix="facepoints-throughput-"))
    manifest, peer_manifest = tmp / "all.txt", tmp / "peers.txt"
    manifest.write_text("\n".join(paths) + "\n")
    peer_manifest.write_text("\n".join(peers) + "\n")
    cores = len(os.sched_getaffinity(0))
    jobs = {}
    for model in ("fast", "default"):
        for w in (1, cores):
            jobs[f"facepoints {model}, {w} worker(s)", len(paths)] = (
                lambda m=model, w=w: run_job(manifest, tmp / f"{m}-{w}.jsonl", m, w))
        jobs[f"facepoints {model}, 1 worker, the peers' photos", len(peers)] = (
            lambda m=model: run_job(peer_manifest, tmp / f"{m}-peers.jsonl", m, 1))
    have_dlib = True
    try:
        import dlib  # noqa: F401
    except ImportError:
        have_dlib = False
    if have_dlib:
        for w in (1, cores):
            jobs[f"dlib 68 (HOG upsample 1 + ERT), {w} process(es)", len(peers)] = lambda w=w: dlib_job(peers, w)
    if args.mediapipe_python.exists():
        for w in (1, cores):
            jobs[f"MediaPipe Face Mesh, {w} process(es)", len(peers)] = (
                lambda w=w: mediapipe_job(args.mediapipe_python, peers, w))
    seconds = {k: 0.0 for k in jobs}
    order = list(jobs)
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            dt = jobs[key]()
            seconds[key] += dt
            print(f"round {r + 1}: {key[0]}: {key[1]} images in {dt:.1f} s ({key[1] / dt:.1f} images/s)", flush=True)
    rate = {k: k[1] * args.rounds / s for k, s in seconds.items()}
    fast_ref = records(tmp / f"fast-{cores}.jsonl")
    kill = kill_check(manifest, len(paths), tmp, fast_ref)
    print(kill, flush=True)
    ray = ray_check(paths[: args.ray_images], tmp)
    print(ray, flush=True)

    cmd = command_line(__file__, argv)
    lines = report_header("Throughput: batch jobs on every core", cmd, args.note)
    lines += [f"Photos: {len(paths)} ({', '.join('/'.join(Path(p).parts[-2:]) for p in args.photos)}; decoded at their own size, "
              f"median {np.median([os.path.getsize(p) for p in paths]) / 1e3:.0f} kB); the peers' subset every "
              f"{args.peer_every}-th: {len(peers)}. {args.rounds} rounds, the order reversed each round; "
              f"{time.perf_counter() - t0:.0f} s in all. Whole jobs, wall clock (process start and model load "
              "included for facepoints; MediaPipe's worker start included).", "",
              "| job | images | images/s | x 1 worker | x dlib, same photos | x MediaPipe, same photos |",
              "|---|---:|---:|---:|---:|---:|"]
    dl1 = next((v for k, v in rate.items() if k[0].startswith("dlib") and ", 1 process" in k[0]), None)
    mp1 = next((v for k, v in rate.items() if k[0].startswith("MediaPipe") and ", 1 process" in k[0]), None)
    for (name, n), v in rate.items():
        base = next((rate[k] for k in rate if k[0] == name.replace(f"{cores} worker(s)", "1 worker(s)")
                     .replace(f"{cores} process(es)", "1 process(es)")), None)
        same = "peers' photos" in name or not name.startswith("facepoints")
        x_dl = f"{v / dl1:.2f}x" if dl1 and same else "-"
        x_mp = f"{v / mp1:.2f}x" if mp1 and same else "-"
        lines.append(f"| {name} | {n} | {v:.1f} | {v / base:.2f}x | {x_dl} | {x_mp} |" if base else
                     f"| {name} | {n} | {v:.1f} | - | {x_dl} | {x_mp} |")
    lines += ["", "x dlib / x MediaPipe: images per second over theirs on the same photos (above 1: faster).", "",
              f"**kill -9 and resume** (fast model, 2 workers, all {len(paths)} photos): {kill}.", "",
              f"**Ray engine** (`predict --engine ray`, a local Ray instance): {ray}.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
