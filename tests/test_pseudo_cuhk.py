"""lab/pseudo-labels/pseudo_cuhk.py: pseudo-labelled faces are kept only where their 5 derived
points agree with the crop's human 5 points; every crop is accounted for."""

import importlib.util

import cv2
import numpy as np

from facepoints.data.formats import read_dataset, write_pts
from helpers import draw_face, synthetic_face_shape
from conftest import ROOT

spec = importlib.util.spec_from_file_location("pseudo_cuhk", ROOT / "lab" / "pseudo-labels" / "pseudo_cuhk.py")
pseudo_cuhk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pseudo_cuhk)


def test_five_points_from_68():
    pts = synthetic_face_shape(seed=3)
    five = pseudo_cuhk.five_from_68(pts)
    np.testing.assert_allclose(five[0], pts[36:42].mean(0))
    np.testing.assert_allclose(five[4], pts[54])
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left first, as CUHK orders them
    assert pseudo_cuhk.nme5(five, five) == 0
    # 1 px off everywhere with eye centres 10 px apart: 10 %
    human = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], float)
    assert abs(pseudo_cuhk.nme5(human + [1, 0], human) - 0.1) < 1e-9


def test_keeps_agreeing_faces_and_counts_the_rest(tmp_path):
    cuhk, labelled = tmp_path / "cuhk", tmp_path / "labelled"
    (cuhk / "lfw").mkdir(parents=True)
    labelled.mkdir()
    lines = []
    for i in range(4):
        pts = synthetic_face_shape(cx=40, cy=40, size=40, seed=i)
        five = pseudo_cuhk.five_from_68(pts)
        if i == 1:
            five = five + [0, 15]  # the human points disagree: rejected
        cv2.imwrite(str(cuhk / "lfw" / f"p{i}.jpg"), draw_face(pts, (80, 80)))
        lines.append(f"lfw/p{i}.jpg " + " ".join(f"{v:.3f}" for v in [*five[:, 0], *five[:, 1]]))
        if i != 3:  # p3: no face labelled
            cv2.imwrite(str(labelled / f"p{i}_1.jpg"), draw_face(pts, (80, 80)))
            write_pts(pts, labelled / f"p{i}_1.pts")
    (cuhk / "new_training.txt").write_text("\n".join(lines[:3]) + "\n")
    (cuhk / "new_testing.txt").write_text(lines[3] + "\n")
    out, md = tmp_path / "kept" / "kept.csv", tmp_path / "report.md"
    assert pseudo_cuhk.main([str(labelled), "--cuhk", str(cuhk), "--out", str(out), "--md", str(md)]) == 0
    kept = read_dataset(f"csv:{out}")
    assert sorted(s.id.split("/")[-1] for s in kept.samples) == ["p0_1.jpg", "p2_1.jpg"]
    assert "| lfw | 4 | 1 |" in md.read_text() and md.read_text().rstrip().endswith("| 2 |")
