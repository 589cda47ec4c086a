"""Video tracking: the One Euro filter against hand-computed values, the jitter measure,
the Tracker's logic (with a scripted stand-in predictor, then the bundled model on a
small clip made from an example photo) and the ``facepoints track`` command."""

import json
import math

import cv2
import numpy as np
import pytest
from conftest import EXAMPLES
from helpers import synthetic_face_shape
from typer.testing import CliRunner

import facepoints
from facepoints.cli import app
from facepoints.data.images import read_image
from facepoints.data.samples import landmark_box
from facepoints.inference.predictor import Face
from facepoints.inference.tracking import (
    BETA,
    MIN_CUTOFF,
    OneEuroFilter,
    Tracker,
    VideoError,
    jitter,
    read_video,
)

runner = CliRunner()


# ------------------------------------------------------------------ One Euro filter


def test_one_euro_first_steps_by_hand():
    # fps 10 -> te 0.1; alpha(fc) = r / (r + 1), r = 2 pi fc te. beta 0: a fixed low-pass,
    # alpha(1 Hz) = 0.6283185 / 1.6283185 = 0.3858695
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, fps=10)
    out = [float(f(v)) for v in (0.0, 1.0, 1.0)]
    np.testing.assert_allclose(out, [0.0, 0.3858695, 0.3858695 + 0.3858695 * (1 - 0.3858695)], atol=1e-6)

    # beta 0.5, d_cutoff 2 Hz (alpha_d = 1.2566371 / 2.2566371 = 0.5568644), input 0, 2, 2:
    # step 1: dx = 20, edx = 11.137288, fc = 1 + 0.5 * 11.137288 = 6.568644,
    #         alpha = 4.127207 / 5.127207 = 0.804961, x = 1.609923
    # step 2: dx = (2 - 1.609923) / 0.1 = 3.900772, edx = 11.137288 + 0.5568644 (3.900772 - 11.137288)
    #         = 7.107536, fc = 4.553768, alpha = 2.861205 / 3.861205 = 0.741013,
    #         x = 1.609923 + 0.741013 * 0.390077 = 1.898977
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, d_cutoff=2.0, fps=10)
    out = [float(f(v)) for v in (0.0, 2.0, 2.0)]
    np.testing.assert_allclose(out, [0.0, 1.609923, 1.898976], atol=2e-5)
    np.testing.assert_allclose(float(f.dx), 7.107527, atol=2e-5)


def test_one_euro_is_elementwise_and_scale_divides_beta():
    rng = np.random.default_rng(0)
    seq = rng.normal(0, 5, (20, 3, 2)).cumsum(0)
    vec = OneEuroFilter(0.7, 2.0, 1.3, fps=25)
    scalars = [[OneEuroFilter(0.7, 2.0, 1.3, fps=25) for _ in range(2)] for _ in range(3)]
    scaled = OneEuroFilter(0.7, 2.0 * 4, 1.3, fps=25)
    for x in seq:
        v = vec(x)
        np.testing.assert_allclose(v, [[scalars[i][j](x[i, j]) for j in range(2)] for i in range(3)], atol=1e-12)
        np.testing.assert_allclose(scaled(x, scale=4.0), v, atol=1e-12)


def test_one_euro_steadies_a_noisy_constant():
    rng = np.random.default_rng(1)
    x = 100 + rng.normal(0, 1.0, (300, 68, 2))  # 1 px noise on a still 150 px face
    still = OneEuroFilter(beta=0.0, fps=30)
    y = np.array([still(p) for p in x])
    assert y[30:].var() < 0.1 * x[30:].var()
    f = OneEuroFilter(fps=30)  # the defaults: noise raises the cutoff a little
    y = np.array([f(p, scale=150.0) for p in x])
    assert y[30:].var() < 0.3 * x[30:].var()
    assert abs(y[30:].mean() - 100) < 0.05


def test_one_euro_lags_a_ramp_boundedly():
    """At a steady speed v the filtered value trails by a constant L. The derivative is
    taken against the previous *filtered* value (the paper's algorithm), so it tends to
    v + L / te, the cutoff to fc = min_cutoff + beta (v + L / te) / scale, and
    L = v te (1 - alpha(fc)) / alpha(fc): a fixed point."""
    fps, v, scale = 30.0, 30.0, 150.0  # 1 px per frame
    te = 1 / fps
    f = OneEuroFilter(fps=fps)
    t = np.arange(150) * te
    lag = np.array([v * ti - float(f(v * ti, scale=scale)) for ti in t])
    L = 0.0
    for _ in range(200):
        r = 2 * math.pi * (MIN_CUTOFF + BETA * (v + L / te) / scale) * te
        alpha = r / (r + 1)
        L = v * te * (1 - alpha) / alpha
    np.testing.assert_allclose(lag[-20:], L, rtol=1e-4)
    assert L < 0.6 * v * te  # under a pixel at 1 px per frame with the defaults
    assert lag.max() < 1.5 * v * te  # the start-up (derivative estimate at 0) stays bounded too
    # without the speed term it trails a lot more
    g = OneEuroFilter(beta=0.0, fps=fps)
    assert v * t[-1] - float([g(v * ti) for ti in t][-1]) > 3 * L


def test_one_euro_refuses_bad_parameters():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)
    with pytest.raises(ValueError, match="beta"):
        OneEuroFilter(beta=-1)
    with pytest.raises(ValueError, match="fps"):
        OneEuroFilter(fps=float("nan"))


# -------------------------------------------------------------------------- jitter


def test_jitter_by_hand():
    face = synthetic_face_shape()
    io = float(np.linalg.norm(face[36] - face[45]))
    frames = np.stack([face + [0, 0], face + [3, 4], face + [3, 4], face])  # steps of 5, 0, 5 px
    assert jitter(frames, normalise=False) == pytest.approx(10 / 3)
    assert jitter(frames) == pytest.approx(10 / 3 / io)
    assert jitter(np.stack([face] * 5)) == 0.0
    with pytest.raises(ValueError):
        jitter(face[None])


# ------------------------------------------------- Tracker logic, scripted predictor


class ScriptedPredictor:
    """Frame k's faces are ``script[k]`` (centre x, centre y, size); pixel (0, 0) of
    the frame holds k. The 'model' returns the face its box overlaps (or a collapsed
    shape where there is none); the 'detector' sees the faces unless told to miss."""

    def __init__(self, script, miss=(), quality=None):
        self.script, self.miss = script, set(miss)
        self.quality = quality or {}  # frame -> the quality the 'model' gives a followed face there
        self.shapes = {}

    def _faces(self, frame):
        k = int(frame[0, 0, 0])
        return [self.shapes.setdefault((k, i), synthetic_face_shape(cx, cy, s, seed=k))
                for i, (cx, cy, s) in enumerate(self.script[k])]

    def predict(self, frame, landmark_boxes=None, pose=True):
        k = int(frame[0, 0, 0])
        if landmark_boxes is not None:  # following: the face the box overlaps
            return [Face(landmark_box(p), None, p, quality=self.quality.get(k))
                    for p in self.landmarks_in_boxes(frame, landmark_boxes)]
        faces = [] if k in self.miss else self._faces(frame)
        return [Face(landmark_box(p), 0.9, np.asarray(p, np.float32)) for p in faces]

    def landmarks_in_boxes(self, frame, boxes):
        faces = self._faces(frame)
        out = []
        for b in boxes:
            ious = [_iou(landmark_box(p), b) for p in faces]
            if ious and max(ious) > 0.1:
                out.append(faces[int(np.argmax(ious))])
            else:  # nothing there: the shape collapses to the crop centre
                out.append(np.tile([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], (68, 1)).astype(np.float32))
        return np.array(out, np.float32)


def _iou(a, b):
    from facepoints.data.crops import box_iou

    return float(box_iou(np.asarray(a)[None], np.asarray(b))[0])


def _frames(n):
    frames = np.zeros((n, 240, 320, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)
    return frames


def _run(tracker, frames):
    return [[f.track_id for f in tracker.update(fr)] for fr in frames]


def test_tracker_follows_a_moving_face_and_detects_on_schedule():
    script = [[(100 + 2 * k, 110, 80)] for k in range(10)]
    tr = Tracker(ScriptedPredictor(script), detect_every=4, smooth=False)
    assert _run(tr, _frames(10)) == [[1]] * 10
    assert tr.detection_frames == [0, 4, 8] and tr.detector_calls == 3


def test_tracker_redetects_when_a_face_is_lost_and_gives_a_new_id():
    script = [[(100, 110, 80)]] * 3 + [[]] * 2 + [[(200, 120, 70)]] * 3
    tr = Tracker(ScriptedPredictor(script), detect_every=30)
    ids = _run(tr, _frames(8))
    # frame 3: the tracked shape collapses -> detection at once -> nothing there;
    # frame 4: no track -> detect (nothing); frame 5: the face is back, as track 2
    assert ids == [[1], [1], [1], [], [], [2], [2], [2]]
    assert tr.detection_frames == [0, 3, 4, 5]


def test_tracker_keeps_two_faces_apart_and_adds_a_newcomer_at_the_next_detection():
    script = [[(80, 100, 60), (240, 100, 60)]] * 3 + [[(80, 100, 60), (240, 100, 60), (160, 190, 50)]] * 4
    tr = Tracker(ScriptedPredictor(script), detect_every=5)
    ids = _run(tr, _frames(7))
    assert ids == [[1, 2]] * 5 + [[1, 2, 3]] * 2  # the newcomer waits for the frame-5 detection


def test_tracker_survives_one_detector_miss_and_asks_again():
    script = [[(100 + k, 110, 80)] for k in range(8)]
    tr = Tracker(ScriptedPredictor(script, miss={3}), detect_every=3)
    assert _run(tr, _frames(8)) == [[1]] * 8
    assert tr.detection_frames == [0, 3, 4, 7]  # the miss at 3 is checked again at 4
    tr = Tracker(ScriptedPredictor(script, miss={3, 4}), detect_every=3)
    assert _run(tr, _frames(8)) == [[1]] * 4 + [[], [2], [2], [2]]  # missed twice: ended


def test_tracker_smoothing_never_changes_the_crops():
    script = [[(100 + 3 * k, 110 + k, 80)] for k in range(8)]
    a = Tracker(ScriptedPredictor(script), detect_every=3)
    b = Tracker(ScriptedPredictor(script), detect_every=3, smooth=False)
    for fr in _frames(8):
        fa, fb = a.update(fr), b.update(fr)
        np.testing.assert_array_equal(fa[0].raw, fb[0].raw)
        np.testing.assert_array_equal(fb[0].landmarks, fb[0].raw)
    assert not np.array_equal(fa[0].landmarks, fa[0].raw)  # smoothed lags the moving face


def test_tracker_redetects_when_the_models_quality_drops():
    script = [[(100 + k, 110, 80)] for k in range(8)]
    # the followed face's quality: fine, then the model is unsure at frames 3 and 4
    q = {1: 0.6, 2: 0.5, 3: 0.1, 4: 0.15, 5: 0.5, 6: 0.5, 7: 0.5}
    tr = Tracker(ScriptedPredictor(script, quality=q), detect_every=30)
    assert _run(tr, _frames(8)) == [[1]] * 8             # the detector finds it again: same id
    assert tr.detection_frames == [0, 3, 4]
    tr = Tracker(ScriptedPredictor(script, quality=q), detect_every=30, min_quality=0.0)
    _run(tr, _frames(8))
    assert tr.detection_frames == [0]                    # the old rule: plausible shapes only
    with pytest.raises(ValueError, match="min_quality"):
        Tracker(ScriptedPredictor(script), min_quality=1.5)


def test_less_trusted_points_are_smoothed_more():
    from facepoints.inference.predictor import Face
    from facepoints.inference.tracking import OneEuroFilter, point_trust

    r = np.ones(68, np.float32)
    r[:17] = 4.0  # the jaw: four times the face's median radius
    w = point_trust(Face(np.zeros(4), None, np.zeros((68, 2), np.float32), error_radius=r))
    assert w.shape == (68, 1) and np.all(w[17:] == 1.0) and np.allclose(w[:17], 0.25)
    assert point_trust(Face(np.zeros(4), None, np.zeros((68, 2), np.float32))) is None
    f = OneEuroFilter(beta=0.0)
    f(np.zeros((68, 2)))
    step = f(np.ones((68, 2)), trust=w)                  # every point jumps 1 px
    assert np.all(step[:17] < step[17:].min())           # the untrusted points follow less
    assert np.allclose(step[17:], OneEuroFilter(beta=0.0)(np.zeros(1)) * 0 + OneEuroFilter.alpha(MIN_CUTOFF, 1 / 30))


def test_cli_defaults_are_the_module_defaults():
    import inspect

    from facepoints.cli import track

    params = inspect.signature(track).parameters
    assert params["min_cutoff"].default.default == MIN_CUTOFF
    assert params["beta"].default.default == BETA


# ------------------------------------------------------- bundled model on a real clip

N_FRAMES, FPS = 7, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The astronaut photo at 256 px, 7 frames moving 1 px per frame, mp4v."""
    img = cv2.resize(read_image(EXAMPLES / "astronaut.jpg"), (256, 256), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (256, 256))
    for k in range(N_FRAMES):
        m = np.float32([[1, 0, k], [0, 1, 0]])
        w.write(cv2.cvtColor(cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REPLICATE), cv2.COLOR_RGB2BGR))
    w.release()
    return path


@pytest.fixture(scope="module")
def predictor():
    return facepoints.load(threads=1)


def test_tracker_on_a_real_clip(clip, predictor):
    fps, frames = read_video(clip)
    assert fps == pytest.approx(FPS)
    frames = list(frames)
    assert len(frames) == N_FRAMES and frames[0].shape == (256, 256, 3)
    tr = Tracker(predictor, fps=fps, detect_every=3)
    out = [tr.update(f) for f in frames]
    assert [[f.track_id for f in faces] for faces in out] == [[1]] * N_FRAMES
    assert tr.detection_frames == [0, 3, 6]
    # on the face the full predictor finds, and moving right with it
    ref = predictor.predict(frames[0])[0].landmarks
    io = np.linalg.norm(ref[36] - ref[45])
    assert np.linalg.norm(out[0][0].landmarks - ref, axis=1).mean() < 0.02 * io
    shift = out[-1][0].raw[:, 0].mean() - out[0][0].raw[:, 0].mean()
    assert 3 < shift < 9  # 6 px


def test_read_video_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match="nothing.mp4"):
        read_video(tmp_path / "nothing.mp4")
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n")
    with pytest.raises(VideoError, match="notes.mp4"):
        read_video(bad)


def test_track_cli_json(clip):
    r = runner.invoke(app, ["track", str(clip), "--json", "--detect-every", "3", "--no-smooth"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["frames"] == N_FRAMES == len(rec["per_frame"])
    assert rec["fps"] == pytest.approx(FPS) and rec["detector_calls"] == 3 and rec["tracks"] == 1
    for k, fr in enumerate(rec["per_frame"]):
        assert fr["frame"] == k and [f["track_id"] for f in fr["faces"]] == [1]
        assert (fr["width"], fr["height"], fr["scheme"]) == (256, 256, "ibug68")  # ImageResult's shape
        face = fr["faces"][0]
        assert len(face["landmarks"]) == 68
        # the bundled default has trust outputs: the same names as predict --json
        assert len(face["error_radius"]) == 68 and len(face["visible"]) == 68 and 0 < face["quality"] <= 1
        assert set(face["pose"]) == {"yaw", "pitch", "roll"} and face["detected"] == (k % 3 == 0)
        np.testing.assert_allclose(face["box"], landmark_box(np.array(face["landmarks"])), atol=0.02)


def test_track_cli_writes_an_annotated_video(clip, tmp_path):
    out = tmp_path / "out" / "annotated.mp4"
    r = runner.invoke(app, ["track", str(clip), "--out", str(out), "--min-cutoff", "1", "--beta", "5"])
    assert r.exit_code == 0, r.output
    assert f"{N_FRAMES} frames" in r.stdout and "1 face track" in r.stdout and str(out) in r.stdout
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N_FRAMES and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 256
    cap.release()


@pytest.mark.parametrize("make", ["missing", "text"])
def test_track_cli_bad_input_names_the_file(tmp_path, make):
    path = tmp_path / "input.mp4"
    if make == "text":
        path.write_text("hello, I am not a video\n")
    r = runner.invoke(app, ["track", str(path), "--json"])
    assert r.exit_code != 0
    assert "error:" in r.output and str(path) in r.output
