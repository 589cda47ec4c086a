"""facepoints clean: each heuristic finds the error it is made for, the JSON and the
reports have the promised shape, and a training config can leave the flagged out."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import facepoints
from facepoints.cli import app
from facepoints.curation.cleaning import DEFAULT_THRESHOLD, HARD, robust_z, score_dataset
from facepoints.data.formats import read_dataset, read_pts, write_pts
from facepoints.data.samples import Dataset, Sample
from facepoints.schemes import IBUG68
from helpers import write_300w_folder

runner = CliRunner()
N = 30

# sample -> (how it is broken, the reason code that must name it)
BROKEN = {
    "face000_1.jpg": "swapped_lr",
    "face001_1.jpg": "shape",        # mouth shuffled
    "face002_1.jpg": "outside_image",
    "face003_1.jpg": "collapsed",
    "face004_1.jpg": "shape",        # mouth pulled far down: an outlier
    "face005_1.jpg": "duplicates",   # 5 points of different parts at one spot
    "face006_1.jpg": "shape",        # right eye shuffled
}


def _break(folder):
    def edit(name, fn):
        p = folder / name.replace(".jpg", ".pts")
        write_pts(fn(read_pts(p).astype(np.float64)), p)

    mouth, eye = np.arange(48, 68), np.arange(36, 42)
    edit("face000_1.jpg", lambda p: p[IBUG68.flip_permutation])

    def shuffle(group):
        def fn(p):
            q = p.copy()
            q[group] = p[np.roll(group, 3)]
            return q
        return fn

    edit("face001_1.jpg", shuffle(mouth))
    edit("face006_1.jpg", shuffle(eye))
    edit("face002_1.jpg", lambda p: p + [600.0, 0.0])
    edit("face003_1.jpg", lambda p: p.mean(0) + (p - p.mean(0)) * 0.002)

    def pull(p):
        q = p.copy()
        q[mouth] += [0.0, 35.0]
        return q

    edit("face004_1.jpg", pull)

    def pile(p):
        q = p.copy()
        q[[0, 8, 19, 36, 48]] = q[30]
        return q

    edit("face005_1.jpg", pile)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = write_300w_folder(tmp_path_factory.mktemp("clean") / "faces", n=N, seed=3)
    _break(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from facepoints.models.network import build_model
    from facepoints.models.package import ModelInfo, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    info = ModelInfo(scheme=IBUG68.to_dict(), backbone="mobilenet_v3_small", head="regression",
                     input_size=48, crop_scale=1.25)
    save_model(build_model("mobilenet_v3_small", 68, pretrained=False, input_size=48).eval(), info, path)
    return path


def test_robust_z():
    z = robust_z([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    assert z[2] == 0 and z[4] > 50 and np.isnan(z[5])
    assert robust_z([5.0, 5.0, 5.0], floor=0.5).tolist() == [0.0, 0.0, 0.0]
    assert robust_z([-10.0, 0.0, 10.0], two_sided=True)[0] == robust_z([-10.0, 0.0, 10.0], two_sided=True)[2]


def test_each_heuristic_finds_its_error(faces):
    ds = read_dataset(f"300w:{faces}")
    rep = score_dataset(ds)
    by = {r.id: r for r in rep.ranked}
    for name, code in BROKEN.items():
        r = by[name]
        assert r.flagged, (name, r.checks)
        assert any(reason.startswith(code) for reason in r.reasons), (name, code, r.reasons)
    # the broken ones come first, the clean ones are not flagged
    assert {r.id for r in rep.ranked[:len(BROKEN)]} == set(BROKEN)
    assert {r.id for r in rep.flagged} == set(BROKEN)
    assert by["face000_1.jpg"].reasons[0].startswith("swapped_lr")
    # the swapped sample is not called a swap for its shape only: no clean one is
    assert all(r.checks.get("swapped_lr", 0) < DEFAULT_THRESHOLD for r in rep.ranked if r.id not in BROKEN)
    assert by["face002_1.jpg"].score >= HARD and by["face003_1.jpg"].score >= HARD


def test_nonfinite_points_are_flagged(faces):
    ds = read_dataset(f"300w:{faces}")
    s = ds.samples[10]
    pts = s.landmarks.copy()
    pts[5] = np.nan
    samples = list(ds.samples)
    samples[10] = Sample(s.image, pts, s.id)
    rep = score_dataset(Dataset(ds.name, ds.scheme, samples))
    r = next(r for r in rep.ranked if r.id == s.id)
    assert r.flagged and r.reasons[0].startswith("nonfinite")


def test_closed_eyes_and_mouths_are_not_duplicates(faces):
    """Lids of a closed eye and lips of a closed mouth touch in real faces."""
    ds = read_dataset(f"300w:{faces}")
    samples = []
    for k, s in enumerate(ds.samples):
        p = s.landmarks.copy()
        if k % 3 == 0 and s.id not in BROKEN:
            p[[37, 38]] = p[[41, 40]]          # closed right eye
            p[[61, 62, 63]] = p[[67, 66, 65]]  # closed mouth
        samples.append(Sample(s.image, p, s.id))
    rep = score_dataset(Dataset(ds.name, ds.scheme, samples))
    assert all(r.checks["duplicates"] == 0 for r in rep.ranked if r.id != "face005_1.jpg")


def test_cli_json_without_model(faces):
    r = runner.invoke(app, ["clean", f"300w:{faces}", "--json", "--no-model"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n"] == N and out["model"] is None
    ids = [f["id"] for f in out["flagged"]]
    assert set(ids) == set(BROKEN)
    scores = [f["score"] for f in out["flagged"]]
    assert scores == sorted(scores, reverse=True)
    for f in out["flagged"]:
        assert set(f) == {"id", "score", "reasons"}
        assert isinstance(f["score"], float) and f["score"] >= DEFAULT_THRESHOLD
        assert f["reasons"] and all(isinstance(t, str) for t in f["reasons"])


def test_cli_with_model_writes_reports(faces, tiny_model, tmp_path):
    out_dir = tmp_path / "report"
    r = runner.invoke(app, ["clean", f"300w:{faces}", "--model", str(tiny_model), "--json", "--out", str(out_dir)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model"] == str(tiny_model)
    # the heuristics still flag what they flag; a random model adds its own opinions
    assert set(BROKEN) <= {f["id"] for f in out["flagged"]}
    full = json.loads((out_dir / "report.json").read_text())
    assert full["flagged"] == out["flagged"] and len(full["samples"]) == N
    assert "model_shift" in full["samples"][-1]["checks"]
    csv_lines = (out_dir / "report.csv").read_text().splitlines()
    assert len(csv_lines) == N + 1 and csv_lines[0].startswith("rank,id,score,flagged,reasons")
    page = (out_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= len(out["flagged"]) and "face000_1.jpg" in page


def test_cli_errors(faces, tmp_path):
    r = runner.invoke(app, ["clean", f"300w:{faces}", "--model", str(tmp_path / "none.safetensors")])
    assert r.exit_code == 2 and "no such model file" in r.output
    r = runner.invoke(app, ["clean", str(faces), "--no-model"])
    assert r.exit_code == 2 and "FORMAT:PATH" in r.output


def test_training_config_excludes_the_flagged(faces, tmp_path):
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    r = runner.invoke(app, ["clean", f"300w:{faces}", "--no-model", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "output": str(tmp_path / "run"),
        "data": {"train": [f"300w:{faces}"], "val_fraction": 0.3, "exclude": str(tmp_path / "rep" / "report.json")},
        "model": {"backbone": "mobilenet_v3_small", "input_size": 48},
    }))
    splits = make_splits(load_config(cfg_path))
    kept = set(splits.train.ids()) | set(splits.val.ids())
    assert len(kept) == N - len(BROKEN) and not kept & set(BROKEN)


def test_out_of_fold_hook_never_predicts_a_sample_with_a_model_that_saw_it(faces, tiny_model):
    from facepoints.curation.cleaning import out_of_fold_predictions

    ds = read_dataset(f"300w:{faces}")
    seen: list[set] = []

    def make_predictor(train: Dataset):
        seen.append(set(train.ids()))
        return facepoints.load(tiny_model, detector=None)

    pred = out_of_fold_predictions(ds, make_predictor, k=3, refine=0)
    assert len(seen) == 3 and pred.shape == (N, 68, 2)
    assert all(len(s) < N for s in seen)
    usable = [i for i, s in enumerate(ds.samples) if s.id != "face003_1.jpg"]
    assert np.isfinite(pred[usable]).all()
    # each sample was left out of exactly one training set
    assert all(sum(s.id not in t for t in seen) == 1 for s in ds.samples)
    rep = score_dataset(ds, predictions=pred, model_name="out of fold")
    assert rep.model == "out of fold" and "model_local" in rep.ranked[0].checks


def test_box_far_from_its_landmarks_is_flagged(faces):
    from facepoints.data.samples import landmark_box

    ds = read_dataset(f"300w:{faces}")
    rng = np.random.default_rng(0)
    samples = []
    for s in ds.samples:
        box = landmark_box(s.landmarks) + rng.normal(0, 1.0, 4).astype(np.float32)  # a detector's box, roughly
        if s.id == "face010_1.jpg":
            box = box + np.float32(40.0)  # half a face off
        samples.append(Sample(s.image, s.landmarks, s.id, box=box))
    rep = score_dataset(Dataset(ds.name, ds.scheme, samples))
    r = next(r for r in rep.ranked if r.id == "face010_1.jpg")
    assert r.flagged and any(t.startswith("box_mismatch") for t in r.reasons)
    assert all(r.checks["box_mismatch"] < DEFAULT_THRESHOLD for r in rep.ranked if r.id != "face010_1.jpg")


def test_out_of_fold_cleaning_from_the_cli(tmp_path):
    """--folds trains k small models, each scoring only faces it never saw."""
    import json

    import yaml
    from typer.testing import CliRunner

    from facepoints.cli import app
    from helpers import write_300w_folder

    data = write_300w_folder(tmp_path / "faces", n=10)
    cfg = tmp_path / "fold.yaml"
    cfg.write_text(yaml.safe_dump({
        # no data.train: the fold models train on the dataset being cleaned
        "output": str(tmp_path / "unused"), "data": {"cache_dir": None},
        "model": {"backbone": "mobilenet_v3_small", "input_size": 40},
        "optim": {"batch_size": 4, "epochs": 1}, "threads": 1,
    }))
    r = CliRunner().invoke(app, ["clean", f"300w:{data}", "--folds", "2", "--fold-config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # one JSON object, training chatter goes to stderr
    assert report["n"] == 10 and report["model"].startswith("2-fold models")
    r = CliRunner().invoke(app, ["clean", f"300w:{data}", "--folds", "2"])
    assert r.exit_code == 2 and "--fold-config" in r.output


def test_detector_box_exposes_a_scaled_shape_and_starts_the_model_crop(tmp_path):
    """With a face detector's box per sample, labels scaled about their centre (which
    no shape check can see) stand out by detector_scale, and the model's first crop is
    the detector's box, not the (wrong) label box."""
    from facepoints.curation.cleaning import model_predictions
    from facepoints.data.samples import landmark_box

    folder = write_300w_folder(tmp_path / "faces", n=N, seed=5)
    ds = read_dataset(f"300w:{folder}")
    truth = [landmark_box(s.landmarks).astype(np.float64) for s in ds.samples]
    rng = np.random.default_rng(0)
    # a detector's box: the true face box with a few % of noise in size and place
    det = np.stack([b + rng.normal(0, 0.02, 4) * (b[2] - b[0]) for b in truth])
    bad = 7
    s = ds.samples[bad]
    s.landmarks = s.landmarks.mean(0) + (s.landmarks - s.landmarks.mean(0)) * 1.25
    rep = score_dataset(ds, detections=det)
    top = rep.ranked[0]
    assert top.index == bad and any(r.startswith("detector_scale") for r in top.reasons), top
    assert score_dataset(ds).ranked[0].index != bad  # the shape checks alone cannot see it

    class Recorder:
        scheme = IBUG68
        seen = []

        def landmarks_in_boxes(self, img, boxes):
            self.seen.append(np.asarray(boxes[0], np.float64))
            return np.asarray(ds.samples[0].landmarks, np.float64)[None]

    rec = Recorder()
    nan = np.full_like(det, np.nan)
    nan[bad] = det[bad]
    model_predictions(ds.subset([bad, 0]), rec, refine=0, start_boxes=nan[[bad, 0]])
    np.testing.assert_allclose(rec.seen[0], det[bad])  # from the detector's box
    np.testing.assert_allclose(rec.seen[1], landmark_box(ds.samples[0].landmarks), atol=1e-4)  # no detection: labels


def test_model_trust_says_how_many_error_radii_the_labels_are_away():
    """With a trust model (the bundled default), each label is measured in the model's own
    90 % error radius: labels on the model's points are a fraction of a radius away, labels
    moved by a tenth of the face are many radii away, and that sample ranks first."""
    from conftest import EXAMPLES
    from facepoints.data.samples import landmark_box

    predictor = facepoints.load(threads=1)
    samples = []
    for photo in sorted(EXAMPLES.glob("*.jpg")):
        for k, face in enumerate(predictor.predict(photo)):
            samples.append(Sample(photo, face.landmarks.astype(np.float64), f"{photo.stem}_{k}"))
    moved = samples[2]
    b = landmark_box(moved.landmarks)
    moved.landmarks = moved.landmarks + 0.1 * (b[2] - b[0])
    rep = score_dataset(Dataset("examples", IBUG68, samples), predictor)
    trust = {r.id: r.checks["model_trust"] for r in rep.ranked}
    assert max(trust, key=trust.get) == moved.id and rep.ranked[0].id == moved.id
    assert any("of the model's own 90 % error radius" in reason for reason in rep.ranked[0].reasons)
