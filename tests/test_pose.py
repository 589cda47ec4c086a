"""Head pose from landmarks, pose statistics, and balancing training by yaw."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facepoints.cli import app
from facepoints.data.formats import write_pts
from facepoints.data.pose import (POSE_INDICES, PoseError, angles_from_matrix, balance_repeats, estimate_pose,
                                  project_model, rotation_matrix)
from facepoints.training.config import TrainConfig
from facepoints.training.loop import make_splits
from helpers import synthetic_face_shape, write_300w_folder

IDX = list(POSE_INDICES["ibug68"])


def face68(yaw, pitch=0.0, roll=0.0, size=(640, 480), centre=None) -> np.ndarray:
    """68 points whose pose points are the generic model turned and projected."""
    pts14 = project_model(yaw, pitch, roll, *size, centre=centre)
    out = np.tile(pts14.mean(0), (68, 1))
    out[IDX] = pts14
    return out.astype(np.float32)


def test_frontal_synthetic_shape_has_no_yaw():
    pts = synthetic_face_shape()
    yaw, pitch, roll = estimate_pose(pts, (200, 220))
    assert abs(yaw) < 3 and abs(roll) < 3
    yaw, _, roll = estimate_pose(pts)  # virtual camera
    assert abs(yaw) < 3 and abs(roll) < 3


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, 0, 0), (-40, 10, 5), (60, -15, -10), (15, 20, 25)])
def test_turned_and_projected_model_gives_its_angles_back(angles):
    for centre in (None, (200, 300)):
        got = estimate_pose(face68(*angles, centre=centre), (640, 480))
        np.testing.assert_allclose(got, angles, atol=3)


def test_yaw_from_a_virtual_camera_is_close():
    got = estimate_pose(face68(30, 0, 0))
    assert abs(got[0] - 30) < 6


def test_sign_conventions():
    pts = project_model(30, 0, 0)  # nose wings are points 8, 9; eye corners 4..7
    assert pts[8:10, 0].mean() > pts[4:8, 0].mean() + 5  # yaw > 0: the nose points to the image's right
    pts = project_model(0, 20, 0)
    frontal = project_model(0, 0, 0)
    nose_up = (pts[8:10, 1].mean() - pts[4:8, 1].mean()) < (frontal[8:10, 1].mean() - frontal[4:8, 1].mean())
    assert nose_up  # pitch > 0: looking up, the nose comes closer to the eyes
    pts = project_model(0, 0, 20)
    assert pts[7, 1] > pts[4, 1]  # roll > 0: clockwise, the image-right eye corner goes down
    r = rotation_matrix(12, -7, 33)
    np.testing.assert_allclose(angles_from_matrix(r), (12, -7, 33), atol=1e-9)


def test_pose_needs_a_known_scheme():
    with pytest.raises(PoseError, match="68-point"):
        estimate_pose(np.zeros((5, 2)), scheme="five")
    with pytest.raises(PoseError, match="one place"):
        estimate_pose(np.zeros((68, 2)))


def test_balance_repeats_counts():
    yaws = np.array([0.0] * 8 + [40.0] * 2 + [np.nan])
    bins = [-90, -20, 20, 90]
    reps, info = balance_repeats(yaws, bins, power=1.0, max_repeat=10, seed=0)
    assert reps.tolist() == [1] * 8 + [4] * 2 + [1]
    assert info["counts"] == [0, 8, 2] and info["counts_after"] == [0, 8, 8] and info["unknown"] == 1
    assert balance_repeats(yaws, bins, 0.5, 10, 0)[0].tolist() == [1] * 8 + [2] * 2 + [1]
    assert balance_repeats(yaws, bins, 0.0, 10, 0)[0].tolist() == [1] * 11
    assert balance_repeats(yaws, bins, 1.0, 3, 0)[0].tolist() == [1] * 8 + [3] * 2 + [1]
    # beyond the ends: end buckets
    assert balance_repeats(np.array([0.0] * 4 + [120.0]), bins, 1.0, 10, 0)[0].tolist() == [1] * 4 + [4]
    # a fractional factor (sqrt(8/3) = 1.63) is drawn, deterministically per seed
    yaws = np.array([0.0] * 8 + [40.0] * 3)
    a = balance_repeats(yaws, bins, 0.5, 10, seed=[3, 1])[0]
    assert a.tolist() == balance_repeats(yaws, bins, 0.5, 10, seed=[3, 1])[0].tolist()
    assert set(a[8:].tolist()) <= {1, 2} and a[:8].tolist() == [1] * 8
    many = balance_repeats(np.array([0.0] * 800 + [40.0] * 300), bins, 0.5, 10, seed=0)[0]
    assert abs(many[800:].mean() - np.sqrt(8 / 3)) < 0.1


def _posed_folder(folder, yaws):
    folder.mkdir(parents=True, exist_ok=True)
    for i, yaw in enumerate(yaws):
        cv2.imwrite(str(folder / f"p{i:02d}_1.jpg"), np.full((480, 640, 3), 90, np.uint8))
        write_pts(face68(yaw), folder / f"p{i:02d}_1.pts")
    return folder


def _config(folder, tmp_path, balance=None, repeat=1):
    data = {"train": [{"spec": f"300w:{folder}", "repeat": repeat}], "val_fraction": 0.0,
            "cache_dir": str(tmp_path / "cache")}
    if balance is not None:
        data["balance"] = balance
    return TrainConfig.model_validate({"data": data, "output": str(tmp_path / "run")})


def test_balance_option_changes_the_epoch_index(tmp_path):
    folder = _posed_folder(tmp_path / "ds", [0.0] * 8 + [40.0] * 2)
    side = {"p08_1.jpg", "p09_1.jpg"}
    plain = make_splits(_config(folder, tmp_path))
    assert plain.repeats == [1] * 10
    balanced = make_splits(_config(folder, tmp_path, {"bins": [-90, -20, 20, 90], "power": 1.0}))
    assert balanced.train.ids() == plain.train.ids()  # same samples, same order, same validation split
    assert balanced.val.ids() == plain.val.ids()
    by_id = dict(zip(balanced.train.ids(), balanced.repeats))
    assert all(by_id[i] == (4 if i in side else 1) for i in by_id)
    # what the loop draws from each epoch: index = np.repeat(arange, repeats)
    index = np.repeat(np.arange(len(balanced.repeats)), balanced.repeats)
    counts = np.bincount(index)
    assert len(index) == 16 and counts[[balanced.train.ids().index(i) for i in side]].tolist() == [4, 4]
    # with the source's own repeat the two multiply; power 0.5 halves the log-factor
    both = make_splits(_config(folder, tmp_path, {"bins": [-90, -20, 20, 90], "power": 0.5}, repeat=2))
    assert sorted(both.repeats) == [2] * 8 + [4] * 2


def test_balance_config_is_checked(tmp_path):
    with pytest.raises(ValueError, match="strictly increasing"):
        _config(tmp_path, tmp_path, {"bins": [0, 10, 5]})
    with pytest.raises(ValueError):
        _config(tmp_path, tmp_path, {"by": "pitch"})


def test_stats_writes_histograms_and_summary(tmp_path):
    folder = write_300w_folder(tmp_path / "ds", n=5)
    out = tmp_path / "stats"
    r = CliRunner().invoke(app, ["stats", f"300w:{folder}", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("yaw", "pitch", "roll"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert cv2.imread(str(png)).shape[0] > 100
    summary = json.loads((out / "pose.json").read_text())
    assert summary["n"] == 5 and summary["n_estimated"] == 5 and sum(summary["yaw"]["counts"]) == 5
    assert abs(summary["yaw"]["mean"]) < 5 and len(summary["samples"]) == 5
    r = CliRunner().invoke(app, ["stats", f"300w:{tmp_path / 'nope'}", "--out", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output
