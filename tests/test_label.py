"""facepoints label: new photos and video frames become a pseudo-labelled dataset."""

import csv

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facepoints.cli import app
from facepoints.data.formats import read_dataset
from facepoints.data.images import read_image
from conftest import EXAMPLES

runner = CliRunner()


def _confidences(folder):
    with open(folder / "confidence.csv") as fh:
        return {r["id"]: float(r["confidence"]) for r in csv.DictReader(fh)}


def test_photos_become_a_300w_dataset_with_confidences(tmp_path):
    photos = [EXAMPLES / "two_faces_composite.jpg", EXAMPLES / "astronaut.jpg"]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = tmp_path / "labelled"
    r = runner.invoke(app, ["label", *map(str, photos), str(bad), "--out", f"300w:{out}"])
    assert r.exit_code == 1 and "bad.jpg" in r.output  # the bad file is reported, the rest labelled
    ds = read_dataset(f"300w:{out}")
    assert sorted(ds.ids()) == ["astronaut_1.jpg", "two_faces_composite_1.jpg", "two_faces_composite_2.jpg"]
    conf = _confidences(out)
    assert set(conf) == set(ds.ids()) and all(0.3 < c <= 1 for c in conf.values())
    # the bundled default has trust outputs: the confidence is the detector's score x its quality
    import facepoints

    face = facepoints.load().predict(EXAMPLES / "astronaut.jpg")[0]
    assert conf["astronaut_1.jpg"] == pytest.approx(face.score * face.quality, abs=1e-4)
    # the two faces of one photo are different faces, kept in one group for splits
    a, b = (s for s in ds.samples if s.id.startswith("two_faces"))
    assert abs(a.landmarks[:, 0].mean() - b.landmarks[:, 0].mean()) > 200
    assert a.group == b.group


def test_video_frames_and_min_confidence(tmp_path):
    img = cv2.cvtColor(read_image(EXAMPLES / "astronaut.jpg"), cv2.COLOR_RGB2BGR)
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (img.shape[1], img.shape[0]))
    for _ in range(6):
        w.write(img)
    w.release()
    out = tmp_path / "frames" / "labels.csv"
    r = runner.invoke(app, ["label", str(video), "--every", "3", "--out", f"csv:{out}"])
    assert r.exit_code == 0, r.output
    ds = read_dataset(f"csv:{out}")
    assert sorted(ds.ids()) == ["clip_f000000_1.jpg", "clip_f000003_1.jpg"]
    # the same picture twice; MJPG decoding differs by a few grey levels and the box by a
    # pixel, so the points agree closely but not exactly (the bundled model: 0.7 px on
    # average, 1.2 % of the 59 px inter-ocular distance; a frame labelled from another
    # frame's landmarks or the wrong face would be tens of percent off)
    a, b = ds.samples[0].landmarks, ds.samples[1].landmarks
    iod = np.linalg.norm(a[36] - a[45])
    assert np.linalg.norm(a - b, axis=1).mean() < 0.02 * iod and np.abs(a - b).max() < 0.06 * iod
    r = runner.invoke(app, ["label", str(video), "--every", "3", "--min-confidence", "1.01",
                            "--out", f"300w:{tmp_path / 'none'}"])
    assert r.exit_code == 0 and "2 below --min-confidence left out" in r.output
    # a file named like a video that is not one is reported (same reader as `track`), the rest labelled
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    r = runner.invoke(app, ["label", str(video), str(bad), "--every", "3", "--out", f"csv:{tmp_path / 'b.csv'}"])
    assert r.exit_code == 1 and "notes.mp4: cannot open as a video" in r.output
    assert len(read_dataset(f"csv:{tmp_path / 'b.csv'}").samples) == 2


def test_dlib_teacher(tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    out = tmp_path / "dl"
    r = runner.invoke(app, ["label", str(EXAMPLES / "obama_portrait.jpg"), "--teacher", "dlib", "--out", f"300w:{out}"])
    assert r.exit_code == 0, r.output
    ds = read_dataset(f"300w:{out}")
    assert len(ds) == 1 and ds.samples[0].landmarks.shape == (68, 2)
    assert 0.3 < _confidences(out)["obama_portrait_1.jpg"] <= 1
    # dlib gets the box it was trained on (its own HOG box of the face), so the label
    # is dlib's answer on that box, not on a detector box of another convention.
    from facepoints.curation.labeling import dlib_landmarker

    teacher = dlib_landmarker()
    img = read_image(EXAMPLES / "obama_portrait.jpg")
    (hog_box,) = teacher.hog_boxes(img)
    np.testing.assert_allclose(ds.samples[0].landmarks, teacher.raw(img, hog_box), atol=0.01)
