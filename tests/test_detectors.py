"""Face detectors: box arithmetic, border/uint16 handling, registry, and a real 300-W image."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepoints.inference import detectors as D
from facepoints.inference.detectors import (
    DETECTORS,
    BoxCalibration,
    Detections,
    FaceDetector,
    get_detector,
)

from conftest import EXAMPLES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AFW = DATA / "300w" / "afw"
HAVE_DLIB = importlib.util.find_spec("dlib") is not None


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --------------------------------------------------------------------- arithmetic


def test_xywh_to_xyxy():
    out = D.xywh_to_xyxy(np.array([[10, 20, 30, 40], [-5, -6, 7, 8]], np.int32))
    np.testing.assert_array_equal(out, [[10, 20, 40, 60], [-5, -6, 2, 2]])
    assert out.dtype == np.float32
    assert D.xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)


def test_pad_shift_and_scale_back():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 0] = 255  # the replicated border copies the edge column
    px = D.pad_pixels(100, 200, 0.25)
    assert px == 50
    padded = D.pad_image(img, px)
    assert padded.shape == (200, 300, 3)
    assert (padded[:, :px + 1] == 255).all() and (padded[:, px + 1:] == 0).all()
    # A box found at the padded image's left edge lies 50 px outside the original;
    # with a 0.5 downscale that is 100 original pixels.
    box = np.array([[10, 40, 90, 120]], np.float32)
    np.testing.assert_allclose(D.unmap_boxes(box, px, 1.0), [[-40, -10, 40, 70]])
    np.testing.assert_allclose(D.unmap_boxes(box, px, 0.5), [[-80, -20, 80, 140]])
    assert D.pad_image(img, 0) is img


def test_work_scale_accounts_for_padding():
    assert D.work_scale(400, 300, 960) == 1.0
    assert D.work_scale(1000, 2000, 960) == pytest.approx(0.48)
    assert D.work_scale(1000, 2000, 960, pad=0.25) == pytest.approx(960 / 3000)
    assert D.work_scale(1000, 2000, None) == 1.0


def test_touches_border():
    assert D.touches_border(np.array([[0, 10, 50, 60]]), 100, 100)
    assert D.touches_border(np.array([[10, 10, 100, 60]]), 100, 100)
    assert not D.touches_border(np.array([[10, 10, 90, 60]]), 100, 100)
    assert not D.touches_border(np.zeros((0, 4)), 100, 100)


class FakeDetector(D._Detector):
    """Returns one box at the left edge of whatever image it is given."""

    name = "fake"
    calibration = BoxCalibration(0.0, 0.1, 1.0, 0.8)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def _raw(self, image_rgb):
        self.seen.append(image_rgb.shape)
        return np.array([[0, 20, 40, 60]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2))


def test_auto_pad_reruns_on_padded_image_and_shifts_back():
    det = FakeDetector(max_side=960, pad=0.25)
    out = det.detect(np.zeros((200, 100, 3), np.uint8))
    assert det.seen == [(200, 100, 3), (300, 200, 3)]  # second pass padded by 50 px
    np.testing.assert_allclose(out.boxes, [[-50, -30, -10, 10]])
    np.testing.assert_allclose(out.keypoints, np.full((1, 5, 2), -50.0))
    assert isinstance(det, FaceDetector)


def test_no_pad_and_downscale():
    det = FakeDetector(max_side=100, pad=0.0)
    out = det.detect(np.zeros((400, 200, 3), np.uint8))
    assert det.seen == [(100, 50, 3)]
    np.testing.assert_allclose(out.boxes, [[0, 80, 160, 240]])  # scaled back by 4


def test_always_pad_with_downscale():
    det = FakeDetector(max_side=150, pad=0.25, pad_mode="always")
    out = det.detect(np.zeros((200, 100, 3), np.uint8))
    # scale 150 / (1.5 * 200) = 0.5 -> 100x50 work image, padded by 25 px
    assert det.seen == [(150, 100, 3)]
    np.testing.assert_allclose(out.boxes, [[-50, -10, 30, 70]])


def test_image_checks():
    det = FakeDetector()
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        det.detect(np.zeros((10, 10, 4), np.uint8))
    det.detect(np.zeros((10, 10), np.uint8))  # grey is accepted
    with pytest.raises(ValueError):
        FakeDetector(pad=-1)
    with pytest.raises(ValueError):
        FakeDetector(pad_mode="sometimes")


def test_detections_sorted_and_typed():
    d = Detections(np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]), [0.2, 0.9, 0.5])
    np.testing.assert_allclose(d.scores, [0.9, 0.5, 0.2])
    np.testing.assert_allclose(d.boxes[:, 0], [2, 4, 0])
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and len(d) == 3
    assert len(Detections.empty()) == 0 and Detections.empty().boxes.shape == (0, 4)
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4)), np.zeros(3))


# -------------------------------------------------------------------- calibration


def test_calibration_arithmetic_on_known_box():
    cal = BoxCalibration(dx=0.1, dy=-0.2, sw=1.5, sh=0.5)
    # w=100, h=200, centre (50, 100) -> centre (60, 60), size 150 x 100
    np.testing.assert_allclose(cal.apply(np.array([0, 0, 100, 200])), [-15, 10, 135, 110])
    out = cal.apply(np.array([[0, 0, 100, 200], [10, 10, 20, 20]]))
    assert out.shape == (2, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], [8.5, 10.5, 23.5, 15.5])  # centre (16, 13), 15 x 5
    np.testing.assert_allclose(BoxCalibration().apply([1, 2, 3, 4]), [1, 2, 3, 4])
    # unapply is the inverse: the detector box that apply turns into a landmark box
    np.testing.assert_allclose(cal.unapply(np.array([-15, 10, 135, 110])), [0, 0, 100, 200], atol=1e-4)
    np.testing.assert_allclose(cal.unapply(out), [[0, 0, 100, 200], [10, 10, 20, 20]], atol=1e-4)


def test_calibration_fit_recovers_constants():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (50, 2))
    wh = rng.uniform(40, 200, (50, 2))
    det = np.concatenate([xy, xy + wh], 1)
    truth = BoxCalibration(dx=0.02, dy=0.13, sw=1.04, sh=0.76)
    fitted = BoxCalibration.fit(det, truth.apply(det))
    for k in ("dx", "dy", "sw", "sh"):
        assert getattr(fitted, k) == pytest.approx(getattr(truth, k), abs=1e-3)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_to_landmark_box_uses_measured_constants(name):
    cls = DETECTORS[name]
    cal = cls.calibration
    assert cal != BoxCalibration(), f"{name}: calibration constants were never measured"
    assert 0.5 < cal.sw < 2 and 0.5 < cal.sh < 2 and abs(cal.dx) < 0.3 and abs(cal.dy) < 0.3
    box = np.array([100, 100, 200, 200], np.float32)
    expected = [150 + cal.dx * 100 - cal.sw * 50, 150 + cal.dy * 100 - cal.sh * 50,
                150 + cal.dx * 100 + cal.sw * 50, 150 + cal.dy * 100 + cal.sh * 50]
    obj = cls.__new__(cls)  # to_landmark_box needs no model
    np.testing.assert_allclose(obj.to_landmark_box(box), expected, rtol=1e-5)


# ----------------------------------------------------------------------- registry


def test_registry_and_unknown_name():
    assert list(DETECTORS) == ["yunet", "blazeface", "dlib-hog", "haar"]
    assert D.DEFAULT_DETECTOR == "yunet"
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'.*yunet, blazeface, dlib-hog, haar"):
        get_detector("mtcnn")
    det = get_detector("YuNet", score_threshold=0.7)
    assert det.name == "yunet" and det.score_threshold == 0.7 and isinstance(det, FaceDetector)
    assert isinstance(get_detector("haar"), FaceDetector)


def test_dlib_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match="pip install dlib-bin"):
        get_detector("dlib-hog")


@pytest.mark.parametrize("name", ["yunet", "blazeface", "haar", pytest.param("dlib-hog", marks=pytest.mark.skipif(
    not HAVE_DLIB, reason="dlib not installed"))])
def test_blank_image_has_no_faces(name):
    d = get_detector(name).detect(np.full((120, 160, 3), 128, np.uint8))
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.scores.shape == (0,)


# ---------------------------------------------------------------------- BlazeFace


def test_blazeface_anchors_follow_mediapipe_layout():
    a = D.blazeface_anchors(128)
    assert a.shape == (896, 2)
    # stride 8: 16 x 16 cells, 2 anchors each, row by row; then stride 16: 8 x 8 cells, 6 each
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16])
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_weighted_nms_merges_overlaps_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.6, 0.9, 0.7])
    points = np.array([[[1, 1]], [[3, 1]], [[55, 55]]], np.float64)
    b, s, p = D.weighted_nms(boxes, scores, points, iou=0.3)
    # the first two overlap (IoU 8/12): one face at their score-weighted mean, best score kept
    np.testing.assert_allclose(s, [0.9, 0.7])
    np.testing.assert_allclose(b[0], [0.4 * 0 + 0.6 * 2, 0, 0.4 * 10 + 0.6 * 12, 10])
    np.testing.assert_allclose(p[0], [[0.4 * 1 + 0.6 * 3, 1]])
    np.testing.assert_allclose(b[1], boxes[2])
    b, s, p = D.weighted_nms(boxes[:0], scores[:0], points[:0], iou=0.3)
    assert b.shape == (0, 4) and s.shape == (0,) and p.shape == (0, 1, 2)


def test_blazeface_agrees_with_yunet_on_the_example_photos():
    from facepoints.data.images import read_image

    blaze, yunet = get_detector("blazeface"), get_detector("yunet")
    for name, n in (("obama_portrait.jpg", 1), ("two_faces_composite.jpg", 2)):
        img = read_image(EXAMPLES / name)
        b, y = blaze.detect(img), yunet.detect(img)
        assert len(b) == len(y) == n, name
        assert b.keypoints.shape == (n, 6, 2)
        for box in blaze.to_landmark_box(b.boxes):  # each calibrated box matches one of YuNet's
            assert max(iou(box, t) for t in yunet.to_landmark_box(y.boxes)) > 0.7, name
        # its keypoints (eyes first) lie inside its own box
        k = b.keypoints[0]
        assert ((k[:4] >= b.boxes[0, :2]) & (k[:4] <= b.boxes[0, 2:])).all()


# ---------------------------------------------------------------------- real data


def _afw_face():
    if not AFW.is_dir():
        pytest.skip(f"300-W data not found at {AFW}")
    from facepoints.data.formats import read_pts
    from facepoints.data.images import read_image
    from facepoints.data.samples import landmark_box

    pts = AFW / "1051618982_1.pts"
    if not pts.is_file():
        pytest.skip(f"{pts} not found")
    return read_image(pts.with_suffix(".jpg")), landmark_box(read_pts(pts))


def _check_found(det, img, gt):
    d = det.detect(img)
    assert len(d) >= 1
    assert d.scores[0] >= d.scores[-1] and 0 <= d.scores.min() and d.scores.max() <= 1
    best = max(iou(b, gt) for b in det.to_landmark_box(d.boxes))
    assert best >= 0.6, best
    return d


def test_yunet_finds_real_300w_face():
    img, gt = _afw_face()
    d = _check_found(get_detector("yunet"), img, gt)
    assert d.keypoints is not None and d.keypoints.shape == (len(d), 5, 2)


def test_yunet_box_reaches_outside_for_face_cut_by_border():
    img, gt = _afw_face()
    x = int(gt[0] + 0.3 * (gt[2] - gt[0]))  # cut off the left 30 % of the face
    cut = np.ascontiguousarray(img[:, x:])
    gt_cut = gt - np.array([x, 0, x, 0], np.float32)
    padded = get_detector("yunet").detect(cut)
    clipped = get_detector("yunet", pad=0).detect(cut)
    assert padded.boxes[0, 0] < 0 <= clipped.boxes[0, 0]
    det = get_detector("yunet")
    assert iou(det.to_landmark_box(padded.boxes[0]), gt_cut) > iou(det.to_landmark_box(clipped.boxes[0]), gt_cut)


@pytest.mark.skipif(not HAVE_DLIB, reason="dlib not installed")
def test_dlib_hog_finds_real_300w_face():
    img, gt = _afw_face()
    _check_found(get_detector("dlib-hog"), img, gt)


def test_downscale_keeps_the_picture_of_area_resampling():
    from facepoints.data.images import read_image

    img = read_image(EXAMPLES / "astronaut.jpg")
    for w, h in ((160, 160), (133, 97), (300, 301)):
        got = D.downscale(img, w, h)
        assert got.shape == (h, w, 3) and got.dtype == np.uint8
        area = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        assert np.abs(got.astype(int) - area).mean() < 12  # grey levels: the same picture, smoothed a little


def test_a_model_file_can_recommend_the_detector_size(tmp_path):
    import facepoints
    from facepoints.models.package import BUNDLED, load_model, save_model

    model, info = load_model(BUNDLED)
    info.recipe = {**info.recipe, "inference": {**info.recipe.get("inference", {}), "detect_size": 200}}
    save_model(model, info, tmp_path / "m.safetensors")
    p = facepoints.load(tmp_path / "m.safetensors", runtime="torch")
    assert p.detect_size == 200 and p.detector.max_side == 200
    assert facepoints.load(tmp_path / "m.safetensors", runtime="torch", detect_size=640).detector.max_side == 640


def test_a_model_file_can_recommend_the_detector(tmp_path):
    from facepoints.inference.predictor import Predictor
    from facepoints.inference.runtime import OnnxRunner, onnx_file
    from facepoints.training.config import InferenceConfig

    run = OnnxRunner(onnx_file("fast"))
    info = run.info()
    info.recipe = {**info.recipe, "inference": {**info.recipe.get("inference", {}), "detector": "blazeface",
                                                "detect_size": None}}
    assert Predictor(run, info).detector.name == "blazeface"  # "auto": the file's choice
    assert Predictor(run, info, detector="yunet").detector.name == "yunet"  # the caller's wins
    info.recipe["inference"].pop("detector")
    assert Predictor(run, info).detector.name == "yunet"  # nothing recommended: YuNet
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        InferenceConfig(detector="mtcnn")
    assert InferenceConfig(detector=" BlazeFace ").detector == "blazeface"


def test_yunet_on_onnx_runtime_finds_what_opencv_finds():
    """The default YuNet path (its network on ONNX Runtime, OpenCV's decoding and NMS in
    NumPy) gives cv2.FaceDetectorYN's faces: same count, boxes, scores and keypoints."""
    from facepoints.data.images import read_image
    from facepoints.inference.detectors import YuNetDetector

    a, b = YuNetDetector(runtime="opencv"), YuNetDetector()
    assert b.runtime == "onnxruntime"
    found = 0
    for photo in sorted(EXAMPLES.glob("*.jpg")):
        img = read_image(photo)
        for pad_mode in ("auto", "always"):
            a.pad_mode = b.pad_mode = pad_mode
            da, db = a.detect(img), b.detect(img)
            assert len(da.boxes) == len(db.boxes), photo
            order_a, order_b = np.argsort(-da.scores), np.argsort(-db.scores)
            np.testing.assert_allclose(da.boxes[order_a], db.boxes[order_b], atol=0.01)
            np.testing.assert_allclose(da.scores[order_a], db.scores[order_b], atol=1e-4)
            found += len(da.boxes)
    assert found >= 14  # 7 faces in the 6 photos, twice
    with pytest.raises(ValueError, match="onnxruntime or opencv"):
        YuNetDetector(runtime="tensorrt")
