"""The bundled model end to end: predict on the example photos, evaluate on a
dataset the test writes, the Python API and the CLI."""

import json

import sys
import numpy as np
import pytest
from typer.testing import CliRunner

import facepoints
from facepoints.cli import app
from facepoints.data.formats import read_pts, write_pts
from facepoints.data.images import read_image
from facepoints.evaluation.metrics import nme
from facepoints.models.package import BUNDLED
from facepoints.schemes import IBUG68
from conftest import EXAMPLES

runner = CliRunner()
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


def test_examples_are_shipped():
    assert len(PHOTOS) >= 3 and BUNDLED.is_file()


def test_api_finds_faces_and_landmarks_in_example_photos():
    predictor = facepoints.load()
    total = 0
    for photo in PHOTOS:
        img = read_image(photo)
        faces = predictor.predict(img)
        total += len(faces)
        for f in faces:
            pts = f.landmarks
            assert isinstance(pts, np.ndarray) and pts.shape == (68, 2) and f.box.shape == (4,)
            x0, y0, x1, y1 = f.box
            # landmarks sit on the face the detector found, not elsewhere
            cx, cy = pts.mean(0)
            assert x0 - 0.1 * (x1 - x0) <= cx <= x1 + 0.1 * (x1 - x0)
            assert y0 - 0.1 * (y1 - y0) <= cy <= y1 + 0.3 * (y1 - y0)
            # anatomy: eyes above the mouth, subject's right eye on the image's left
            assert pts[36:48, 1].mean() < pts[48:68, 1].mean()
            assert pts[36:42, 0].mean() < pts[42:48, 0].mean()
    assert total >= len(PHOTOS)


def test_boxes_given_skip_the_detector():
    predictor = facepoints.load(detector=None)
    img = read_image(PHOTOS[0])
    h, w = img.shape[:2]
    for kw in ("boxes", "landmark_boxes"):
        faces = predictor.predict(img, **{kw: [[w * 0.3, h * 0.3, w * 0.6, h * 0.6]]})
        assert len(faces) == 1 and faces[0].score is None and predictor._detector is None


def test_feeding_back_the_returned_boxes_gives_the_same_landmarks():
    """predict(image, boxes=faces' boxes) runs the detector path from those boxes: the
    landmarks are the ones predict(image) returned (the bar: at most 1 px on average)."""
    predictor = facepoints.load()
    moved = []
    for photo in PHOTOS:
        img = read_image(photo)
        faces = predictor.predict(img)
        boxes = np.stack([f.box for f in faces])
        again = predictor.predict(img, boxes=boxes)
        for a, b in zip(faces, again):
            assert np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() <= 1.0, photo
            np.testing.assert_array_equal(a.box, b.box)
        # the same boxes read as tight landmark boxes are another crop, used as given (no
        # calibration, no refinement): the points move
        tight = predictor.predict(img, landmark_boxes=boxes)
        np.testing.assert_array_equal(np.stack([t.landmarks for t in tight]), predictor.landmarks_in_boxes(img, boxes))
        moved += [np.linalg.norm(a.landmarks - t.landmarks, axis=1).mean() for a, t in zip(faces, tight)]
    assert np.mean(moved) > 1.0


def test_faces_serialise_rounded_only_in_to_dict():
    face = facepoints.load().predict(read_image(PHOTOS[0]))[0]
    assert face.landmarks.dtype == np.float32 and not np.allclose(face.landmarks, face.landmarks.round(2))
    d = face.to_dict()
    # the bundled default has trust outputs: a radius and a visibility per point, a quality, and a head pose
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"box", "score", "landmarks", "error_radius", "visible", "quality", "pose"}
    assert d["landmarks"][0] == [round(float(v), 2) for v in face.landmarks[0]]
    assert d["pose"] == {k: round(float(v), 1) for k, v in face.pose.items()} and abs(d["pose"]["yaw"]) < 45
    assert d["error_radius"] == [round(float(r), 2) for r in face.error_radius] and min(d["error_radius"]) > 0
    assert all(0 <= v <= 1 for v in d["visible"]) and 0 < d["quality"] < 1


@pytest.mark.parametrize("box, why", [([[0, 0, float("nan"), 10]], "not finite"), ([[0, 0, float("inf"), 9]], "not finite"),
                                      ([[5, 5, 5, 20]], "empty or inverted"), ([[30, 30, 10, 10]], "empty or inverted")])
def test_bad_boxes_are_refused(box, why):
    predictor = facepoints.load(detector=None)
    img = read_image(PHOTOS[0])
    for kw in ("boxes", "landmark_boxes"):
        with pytest.raises(ValueError, match=why):
            predictor.predict(img, **{kw: box})


def test_detect_size_downscales_only_the_detector_input():
    # The detector sees a smaller image; landmarks still come from full-resolution
    # crops, so on faces large enough for both they agree closely.
    full, small = facepoints.load(), facepoints.load(detect_size=320)
    assert small.detector.max_side == 320 and full.detector.max_side == 960
    for photo in PHOTOS:
        img = read_image(photo)
        a, b = full.predict(img), small.predict(img)
        assert len(a) == len(b), photo
        for fa, fb in zip(sorted(a, key=lambda f: f.box[0]), sorted(b, key=lambda f: f.box[0])):
            pa, pb = fa.landmarks, fb.landmarks
            iod = np.linalg.norm(pa[36] - pa[45])
            assert np.linalg.norm(pa - pb, axis=1).mean() < 0.05 * iod, photo
    r = runner.invoke(app, ["predict", str(PHOTOS[0]), "--detect-size", "8"])
    assert r.exit_code == 2 and "--detect-size" in r.output
    with pytest.raises(ValueError, match="detect_size applies to a detector given by name"):
        facepoints.load(detector=small.detector, detect_size=160)


def test_predict_cli_writes_png_and_json(tmp_path):
    r = runner.invoke(app, ["predict", *map(str, PHOTOS), "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [line["image"] for line in lines] == [str(p) for p in PHOTOS]
    for p in PHOTOS:
        rec = json.loads((tmp_path / f"{p.stem}.json").read_text())
        assert rec["faces"] and len(rec["faces"][0]["landmarks"]) == 68
        assert (tmp_path / f"{p.stem}.png").stat().st_size > 1000


def test_evaluate_cli_on_a_dataset_made_from_the_examples(tmp_path):
    """Pseudo ground truth = the model's own detector-path predictions; the GT-box
    protocol must then agree closely (a consistency check of crop and un-crop)."""
    predictor = facepoints.load()
    for p in PHOTOS:
        faces = predictor.predict(read_image(p))
        (tmp_path / p.name).write_bytes(p.read_bytes())
        write_pts(faces[0].landmarks, tmp_path / f"{p.stem}.pts")
    r = runner.invoke(app, ["evaluate", f"300w:{tmp_path}", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n"] == len(PHOTOS) and s["n_missed"] == 0
    assert s["nme_io"] < 3.0 and s["fr10"] == 0.0
    assert {"n", "nme_io", "fr10", "auc10"} <= s.keys()


def test_bundled_model_accuracy_on_300w_validation_faces(shared_data):
    """A handful of real 300-W faces with human labels, ground-truth boxes."""
    predictor = facepoints.load(detector=None)
    files = sorted((shared_data / "300w" / "afw").glob("*.pts"))[:40]
    gt = np.stack([read_pts(f) for f in files])
    pred = np.stack([predictor.predict(read_image(f.with_suffix(".jpg")),
                                       landmark_boxes=[[*g.min(0), *g.max(0)]])[0].landmarks for f, g in zip(files, gt)])
    assert nme(pred, gt, IBUG68).mean() < 0.08


def test_bad_arguments_give_clear_errors(tmp_path):
    r = runner.invoke(app, ["evaluate", "nope:/x"])
    assert r.exit_code == 2 and "FORMAT:PATH" in r.output
    r = runner.invoke(app, ["predict", str(PHOTOS[0]), "--model", str(tmp_path / "none.safetensors")])
    assert r.exit_code == 2 and "no such model file" in r.output


def test_fast_model_by_name_follows_the_default_model():
    """`--model fast` / load("fast"): the bundled 112 px model (stride-16 trunk), on the same boxes, lands
    near the default model's points on the example photos (it is less accurate, not
    something else)."""
    default, fast = facepoints.load(detector=None), facepoints.load("fast", detector=None)
    assert fast.info.input_size == 112 and not fast.flip
    assert facepoints.load("fast").detector.name == "blazeface" and facepoints.load().detector.name == "yunet"
    for photo in PHOTOS:
        img = read_image(photo)
        for face in facepoints.load().predict(img):
            ref = face.landmarks
            box = [[*ref.min(0), *ref.max(0)]]
            pa = default.predict(img, landmark_boxes=box)[0].landmarks
            pb = fast.predict(img, landmark_boxes=box)[0].landmarks
            iod = np.linalg.norm(pa[36] - pa[45])
            assert np.linalg.norm(pa - pb, axis=1).mean() < 0.06 * iod, photo
    r = runner.invoke(app, ["predict", str(PHOTOS[0]), "--model", "fast", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout.splitlines()[0])["faces"][0]["landmarks"]) == 68


def test_cli_detector_and_refine_options_reach_the_predictor():
    r = runner.invoke(app, ["predict", str(PHOTOS[0]), "--json", "--detector", "blazeface", "--refine", "0", "--no-flip"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.splitlines()[0])["faces"]
    want = facepoints.load(detector="blazeface", refine=0, flip=False).predict(PHOTOS[0])
    assert len(got) == len(want) >= 1
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["landmarks"], w.landmarks, atol=0.01)
        np.testing.assert_allclose(g["box"], w.box, atol=0.01)
    refined = facepoints.load(detector="blazeface", refine=1, flip=False).predict(PHOTOS[0])
    assert np.abs(refined[0].landmarks - want[0].landmarks).max() > 0.05  # the option changes something
    r = runner.invoke(app, ["predict", str(PHOTOS[0]), "--refine", "4"])
    assert r.exit_code == 2 and "--refine" in r.output


def test_predict_takes_pil_images_bgr_arrays_grey_and_lists():
    from PIL import Image

    import cv2

    predictor = facepoints.load()
    rgb = read_image(PHOTOS[0])
    want = np.stack([f.landmarks for f in predictor.predict(rgb)])
    same = [predictor.predict(Image.fromarray(rgb)), predictor.predict(Image.fromarray(rgb).convert("RGBA")),
            predictor.predict(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True),
            predictor.predict(cv2.imread(str(PHOTOS[0])), bgr=True)]
    for faces in same:
        np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), want, atol=0.5)
    batch = predictor.predict([rgb, PHOTOS[0]])
    assert len(batch) == 2 and all(len(b) == len(want) for b in batch)
    grey = predictor.predict(Image.fromarray(rgb).convert("L"))
    assert len(grey) == len(want)
    with pytest.raises(ValueError, match="must be uint8"):
        predictor.predict(rgb.astype(np.float32))


def test_openvino_runtime_gives_the_onnx_runtime_faces(monkeypatch):
    """runtime="openvino" runs the same ONNX file (bf16 on CPUs with AMX): the same faces,
    landmarks within a pixel, the trust outputs too; without OpenVINO one clear error."""
    pytest.importorskip("openvino")
    import facepoints
    from facepoints.errors import MissingDependency, UsageError

    photo = EXAMPLES / "two_faces_composite.jpg"
    a, b = facepoints.load(runtime="openvino").predict(photo), facepoints.load().predict(photo)
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
        io = np.linalg.norm(fb.landmarks[36] - fb.landmarks[45])
        assert np.abs(fa.landmarks - fb.landmarks).max() < 0.02 * io
        assert fa.error_radius is not None and abs(fa.quality - fb.quality) < 0.05
    with pytest.raises(UsageError, match="choose auto, onnx, openvino or torch"):
        facepoints.load(runtime="tensorflow")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependency, match="facepoints\\[openvino\\]"):
        facepoints.load(runtime="openvino")
