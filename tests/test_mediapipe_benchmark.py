"""The MediaPipe column of benchmarks/compare.py: the 468 -> 68 mapping, how misses are
scored, and (only where .venv-mediapipe exists) the worker end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT
from facepoints.schemes import IBUG68

MP_PYTHON = ROOT / ".venv-mediapipe" / "bin" / "python"
# vertices on the symmetry plane of MediaPipe's canonical face mesh (x = 0)
MESH_MIDLINE = {0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152, 164,
                168, 175, 195, 197, 199, 200}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def worker():
    return _load("mediapipe_worker")  # imports no MediaPipe until a Worker is made


def test_mapping_covers_68_points_with_mesh_indices(worker):
    assert len(worker.MP_TO_IBUG68) == 68
    assert all(1 <= len(ix) <= 2 and all(0 <= i < 468 for i in ix) for ix in worker.MP_TO_IBUG68)


def test_mapping_sends_ibug_midline_to_mesh_midline(worker):
    perm = IBUG68.flip_permutation
    midline = [i for i in range(68) if perm[i] == i]
    assert midline == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    for i in midline:
        assert set(worker.MP_TO_IBUG68[i]) <= MESH_MIDLINE, i
    # the outer eye corners (the io normaliser) are single, distinct vertices
    assert worker.MP_TO_IBUG68[36] == [33] and worker.MP_TO_IBUG68[45] == [263]


def test_to_ibug68_averages_pairs(worker):
    mesh = [[float(i), 2.0 * i] for i in range(468)]
    out = worker.to_ibug68(mesh)
    assert out[3] == [(132 + 58) / 2, 132 + 58]
    assert out[36] == [33.0, 66.0]


def test_choose_matches_the_box_or_reports_a_miss(worker):
    w = worker.Worker.__new__(worker.Worker)  # no MediaPipe needed for choose()
    w.min_iou = 0.3
    a = [[x, y] for x, y in np.random.default_rng(0).uniform(0, 100, (468, 2))]
    b = [[x + 500, y] for x, y in a]
    box_b = worker.tight_box(worker.to_ibug68(b))
    mesh, ibug, iou = w.choose([a, b], box_b)
    assert mesh is b and iou == pytest.approx(1.0)
    mesh, ibug, iou = w.choose([a], box_b)
    assert mesh is None and ibug is None and iou == 0.0
    assert w.choose([], None) == (None, None, None)
    assert w.choose([a, b], None)[0] is a


def test_row_counts_misses_as_failures():
    compare = _load("compare")
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 200, (4, 68, 2))
    gt[:, 36], gt[:, 45] = (100.0, 150.0), (200.0, 150.0)
    pred = gt + 1.0
    full = compare.row("m", pred, gt, 0.4)
    assert full.startswith("| m | 4 | 1.41 |")  # unchanged format without misses
    pred[1] = np.nan
    missed = compare.row("m", pred, gt, 0.4).split(" | ")
    assert missed[1] == "3 of 4 (1 missed)"
    assert missed[2] == "1.41"  # NME over the faces found
    assert missed[4] == "25.00"  # FR@0.1: the miss is a failure


@pytest.mark.skipif(not MP_PYTHON.exists(), reason="no .venv-mediapipe (MediaPipe needs numpy<2)")
def test_worker_end_to_end():
    req = json.dumps([str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "no-such.jpg")])
    run = subprocess.run([str(MP_PYTHON), str(ROOT / "benchmarks" / "mediapipe_worker.py"), "-",
                          "--repeats", "1", "--warmup", "0"], input=req, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    face, missing = out["results"]
    assert face["n_faces"] == 1 and len(face["mesh468"]) == 468 and len(face["ibug68"]) == 68
    pts = np.array(face["ibug68"])
    assert (pts >= 0).all() and (pts[:, 0] < face["width"]).all() and (pts[:, 1] < face["height"]).all()
    assert pts[36, 0] < pts[45, 0]  # subject's right eye on the image left
    assert missing["error"] and missing["ibug68"] is None
