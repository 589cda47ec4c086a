"""Large poses (face profiling, the AFLW2000-3D protocol) and trust outputs (error radius,
visibility, quality, head pose), on inputs whose answers are known."""

import json

import numpy as np
import pytest
import yaml
from helpers import write_300w_folder
from typer.testing import CliRunner

from facepoints.cli import app
from facepoints.data.canonical import face_model
from facepoints.data.formats import read_dataset, write_pts
from facepoints.data.pose import head_pose
from facepoints.data.pose import rotation_matrix as rotation
from facepoints.data.profiling import fit_face, profile_face
from facepoints.data.samples import AnnotationError
from facepoints.evaluation.metrics import pose_protocol
from facepoints.training.trust import fit_trust, trust_report


def projected_model(yaw, pitch=0.0, roll=0.0, scale=12.0, centre=(200.0, 200.0)):
    """The canonical face's 68 points turned by the angles and projected orthographically."""
    pts = face_model().points68 @ rotation(yaw, pitch, roll).T
    return (pts[:, :2] * scale + centre).astype(np.float32)


@pytest.mark.parametrize("yaw", [-60.0, -20.0, 0.0, 35.0, 70.0])
def test_fit_face_recovers_the_yaw_and_scale_of_a_projected_face(yaw):
    fit = fit_face(projected_model(yaw, scale=12.0))
    assert fit.yaw == pytest.approx(yaw, abs=0.5)
    assert fit.scale == pytest.approx(12.0, rel=0.01)


def test_profile_face_turns_the_labels_with_the_3d_face_and_hides_the_far_side():
    labels = projected_model(0.0)
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    res = profile_face(image, labels, 60.0)
    assert res.image.shape == image.shape and not np.array_equal(res.image, image)
    # the labels are the turned model points (the face was the model itself)
    np.testing.assert_allclose(res.points, projected_model(60.0), atol=0.5)
    assert res.yaw == 60.0 and res.source_yaw == pytest.approx(0.0, abs=0.5)
    # yaw > 0 turns the nose to the image's right: the subject's left (jaw 9-16) goes away
    assert not res.visible[12:17].any() and res.visible[0:5].all()
    assert res.visible[[36, 39, 48, 30]].all()          # the near eye, mouth corner and nose tip stay seen
    assert profile_face(image, labels, 0.0).visible.all()  # no turn: every labelled point stays seen


@pytest.mark.parametrize("angles", [(30.0, 0.0, 0.0), (-50.0, 10.0, 0.0), (0.0, 15.0, 0.0), (10.0, 0.0, 20.0)])
def test_head_pose_recovers_the_angles_of_a_turned_face(angles):
    yaw, pitch, roll = head_pose(projected_model(*angles))
    assert yaw == pytest.approx(angles[0], abs=2.0)
    assert pitch == pytest.approx(angles[1], abs=6.0)
    assert roll == pytest.approx(angles[2], abs=1.0)


def test_pose_protocol_buckets_and_balanced_mean():
    err = np.array([0.02, 0.04, 0.06, 0.08, 0.10, np.nan])
    yaw = np.array([5, -29, 30, -59.9, 95, 70])  # |yaw| 95 counts in 60-90; NaN (missed) is left out
    p = pose_protocol(err, yaw)
    assert p["0-30"] == pytest.approx(3.0) and p["30-60"] == pytest.approx(7.0) and p["60-90"] == pytest.approx(10.0)
    assert (p["n 0-30"], p["n 30-60"], p["n 60-90"]) == (2, 2, 1)
    assert p["balanced"] == pytest.approx(20 / 3)
    assert "balanced" not in pose_protocol(err[:2], yaw[:2])  # an empty bucket: no balanced mean


def test_300w_sidecars_give_yaw_and_visibility_and_bad_ones_are_named(tmp_path):
    folder = write_300w_folder(tmp_path / "f", n=3)
    (folder / "yaw.csv").write_text("name,yaw_degrees\nface000_1,45.5\nface002_1.jpg,-10\n")
    (folder / "visible.csv").write_text("name," + ",".join(f"v{i}" for i in range(68)) + "\n"
                                        + "face001_1," + ",".join(["0"] * 17 + ["1"] * 51) + "\n")
    by_id = {s.id: s for s in read_dataset(f"300w:{folder}")}
    assert by_id["face000_1.jpg"].attributes["yaw"] == 45.5 and by_id["face002_1.jpg"].attributes["yaw"] == -10
    assert "yaw" not in by_id["face001_1.jpg"].attributes
    np.testing.assert_array_equal(by_id["face001_1.jpg"].attributes["visible"], [0] * 17 + [1] * 51)
    (folder / "visible.csv").write_text("name,v0\nface001_1,1\n")
    with pytest.raises(AnnotationError, match="visible.csv.*1 visibility flags for 68 points"):
        read_dataset(f"300w:{folder}")
    (folder / "visible.csv").unlink()
    (folder / "yaw.csv").write_text("name,yaw_degrees\nface000_1,forty\n")
    with pytest.raises(AnnotationError, match=r"yaw.csv:2: not a number"):
        read_dataset(f"300w:{folder}")


def test_points_under_an_occluder_are_marked_hidden_and_flips_carry_visibility():
    import albumentations as A

    from facepoints.data.augment import apply
    from facepoints.schemes import IBUG68

    pts = projected_model(0.0, scale=3.0, centre=(32.0, 32.0))
    image = np.zeros((64, 64, 3), np.uint8)
    hole = A.Compose([A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.5, 0.5),
                                      hole_width_range=(0.5, 0.5), fill=0, p=1)],
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False), save_applied_params=True)
    hole.set_random_seed(0)
    out = hole(image=image, keypoints=pts)
    x1, y1, x2, y2 = out["applied_transforms"][0][1]["holes"][0]
    hole.set_random_seed(0)
    _, p, vis = apply(hole, image, pts, IBUG68, np.ones(68, np.float32))
    inside = (p[:, 0] >= x1) & (p[:, 0] < x2) & (p[:, 1] >= y1) & (p[:, 1] < y2)
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(vis, (~inside).astype(np.float32))
    flip = A.Compose([A.HorizontalFlip(p=1)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     save_applied_params=True)
    given = np.ones(68, np.float32)
    given[0] = 0  # the subject's right jaw end hidden: after a flip it is point 16
    _, _, vis = apply(flip, image, pts, IBUG68, given)
    assert vis[16] == 0 and vis.sum() == 67


def test_fit_trust_covers_90_percent_and_quality_ranks_the_bad_faces_last():
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.01, 0.08, (400, 1)) * rng.uniform(0.5, 1.5, (1, 5))  # hard faces and hard points
    errors = rng.gamma(2.0, scale)          # the law the scale is trained for: mean 2b
    cal = fit_trust(errors, scale, "test")
    assert len(cal["radius90"]) == 5 and cal["faces"] == 400
    face_nme = errors.mean(1)
    rep = trust_report(errors, scale, cal, face_nme, fail_at=np.quantile(face_nme, 0.9))
    assert rep["coverage"] == pytest.approx(0.9, abs=0.01)
    assert rep["rank_corr"] > 0.4 and rep["fail_auroc"] > 0.75 and rep["selective_gain"] > 0.05
    # a wider coverage is a wider radius, and it is stored; the quality scale can come from a part
    wide = fit_trust(errors, scale, "test", coverage=0.95)
    assert wide["coverage"] == 0.95 and all(w > n for w, n in zip(wide["radius90"], cal["radius90"]))
    assert trust_report(errors, scale, wide, face_nme)["coverage"] == pytest.approx(0.95, abs=0.01)
    part = fit_trust(np.concatenate([errors, 3 * errors]), np.concatenate([scale, scale]), quality_on=(errors, scale))
    assert part["quality_scale"] > cal["quality_scale"]  # wider radii from the pooled errors, same faces' median
    with pytest.raises(ValueError, match="coverage"):
        fit_trust(errors, scale, coverage=1.0)


def _tiny_trust_run(tmp_path, epochs=1):
    data = write_300w_folder(tmp_path / "faces", n=12)
    pose = write_300w_folder(tmp_path / "pose", n=6, seed=5)
    (pose / "yaw.csv").write_text("name,yaw_degrees\n" + "".join(f"face{i:03d}_1,{y}\n"
                                                                for i, y in enumerate([5, 10, 40, 50, 70, 80])))
    cfg = {"name": "tiny", "seed": 3, "output": str(tmp_path / "run"),
           "data": {"train": [f"300w:{data}"], "val_fraction": 0.25, "cache_dir": str(tmp_path / "cache"),
                    "pose_val": [f"300w:{pose}"]},
           "model": {"backbone": "mobilenet_v3_small", "input_size": 64, "head": "pip", "pip_trust": True},
           "augment": {"occlusion": 0.5}, "optim": {"batch_size": 4, "epochs": epochs, "lr": 0.001}, "threads": 1}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_trust_run_reports_pose_and_trust_and_its_export_gives_faces_their_trust(tmp_path):
    import facepoints
    from facepoints.deploy.export import export_model
    from facepoints.training.config import load_config
    from facepoints.training.loop import train

    best = train(load_config(_tiny_trust_run(tmp_path)), progress=False)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["pose_n[300w:pose 0-30]"] == 2 and rec["pose_n[300w:pose 60-90]"] == 2
    assert np.isfinite(rec["pose_nme_box[300w:pose balanced]"])
    assert 0 <= rec["trust_coverage[300w:pose]"] <= 1 and "trust_coverage[val]" in rec
    # extra held-out faces join the calibration (fitted on both, reported apart), at the coverage asked
    from facepoints.models.info import read_info
    from facepoints.training.loop import calibrate_model

    cfg = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    cfg["data"]["trust_calibration"] = cfg["data"].pop("pose_val")
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump(cfg))
    metrics = calibrate_model(load_config(tmp_path / "cal.yaml"), best, tmp_path / "cal.safetensors", coverage=0.95)
    trust = read_info(tmp_path / "cal.safetensors").trust
    assert trust["coverage"] == 0.95 and "+ 6 of 300w:pose" in trust["fitted_on"]
    assert "trust_coverage[300w:pose]" in metrics and "trust_coverage[val]" in metrics
    report = export_model(best, "onnx", tmp_path / "m.onnx")
    assert report.ok
    predictor = facepoints.load(tmp_path / "m.onnx", detector=None)
    assert predictor.run.output_names == ["landmarks", "trust"]
    face = predictor.predict(np.full((240, 240, 3), 128, np.uint8), landmark_boxes=[[60, 60, 180, 190]])[0]
    assert face.error_radius.shape == (68,) and (face.error_radius > 0).all()
    assert face.visible.shape == (68,) and ((face.visible >= 0) & (face.visible <= 1)).all()
    assert 0 < face.quality < 1 and set(face.pose) == {"yaw", "pitch", "roll"}
    d = face.to_dict()
    assert len(d["error_radius"]) == 68 and len(d["visible"]) == 68 and set(d["pose"]) == {"yaw", "pitch", "roll"}
    # --no-trust: landmarks only (the same points), no trust calibration in the metadata
    assert export_model(best, "onnx", tmp_path / "lm.onnx", trust=False).ok
    plain_onnx = facepoints.load(tmp_path / "lm.onnx", detector=None)
    assert plain_onnx.run.output_names == ["landmarks"] and plain_onnx.info.trust == {}
    bare = plain_onnx.predict(np.full((240, 240, 3), 128, np.uint8), landmark_boxes=[[60, 60, 180, 190]])[0]
    assert bare.error_radius is None and bare.quality is None
    np.testing.assert_allclose(bare.landmarks, face.landmarks, atol=1e-3)
    # without trust outputs the keys are absent, not null
    plain = bare.to_dict()
    assert "error_radius" not in plain and "visible" not in plain and "pose" in plain


def test_trust_modules_run_only_when_their_output_is_wanted():
    """Exports with trust outputs put the trust modules under an If on the optional input
    trust_wanted (true by default): landmark-only calls (refinement passes,
    landmarks_in_boxes) pass false and skip them, with the same landmarks."""
    import onnx
    import onnxruntime as ort

    from facepoints.inference.runtime import TRUST_GATE, OnnxRunner
    from facepoints.models.info import BUNDLED_ONNX

    path = BUNDLED_ONNX["fast"]
    graph = onnx.load(str(path)).graph
    gate = [n for n in graph.node if n.op_type == "If"]
    assert len(gate) == 1 and list(gate[0].input) == [TRUST_GATE] and list(gate[0].output) == ["trust"]
    assert len(gate[0].attribute[0].g.node) + len(gate[0].attribute[1].g.node) > 20  # the trust modules moved
    runner = OnnxRunner(path)
    x = np.random.default_rng(0).random((2, 3, 112, 112), np.float32)
    landmarks, trust = runner.run_trust(x)
    np.testing.assert_array_equal(runner(x), landmarks)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plain = session.run(None, {"image": x})  # a caller that knows nothing of the gate: both outputs
    np.testing.assert_array_equal(plain[1], trust)
    skipped = session.run(None, {"image": x, TRUST_GATE: np.array(False)})
    np.testing.assert_array_equal(skipped[0], landmarks)
    assert skipped[1].shape == (0, 68, 2) and trust.shape == (2, 68, 2)


def test_cli_profile_faces_turns_training_faces_only_and_never_writes_into_a_full_folder(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(8):  # faces a 3-D fit can follow: the canonical face, slightly turned
        pts = projected_model(float(i * 3 - 10), scale=8.0, centre=(110.0, 120.0))
        import cv2

        cv2.imwrite(str(faces / f"p{i:02d}_1.jpg"), np.random.default_rng(i).integers(0, 255, (240, 220, 3), np.uint8))
        write_pts(pts, faces / f"p{i:02d}_1.pts")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": [f"300w:{faces}"], "val_fraction": 0.25,
                                            "cache_dir": str(tmp_path / "cache")}}))
    out = tmp_path / "turned"
    res = CliRunner().invoke(app, ["profile-faces", str(cfg), "--out", str(out), "--low", "40", "--high", "50"])
    assert res.exit_code == 0, res.output
    turned = read_dataset(f"300w:{out}")
    from facepoints.training.config import load_config
    from facepoints.training.loop import make_splits

    train_ids = {s.id.split(".")[0] for s in make_splits(load_config(cfg)).train}
    assert 0 < len(turned) == len(train_ids) < 8  # the validation faces are not turned
    assert {s.id.rsplit("_p", 1)[0] for s in turned} == train_ids
    assert all(40 <= abs(s.attributes["yaw"]) <= 50 and s.attributes["visible"].shape == (68,) for s in turned)
    assert json.loads((out / "provenance.json").read_text())["faces"] == len(train_ids)
    again = CliRunner().invoke(app, ["profile-faces", str(cfg), "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
    # the validation faces, turned: for calibration (data.trust_calibration), refused as training data
    val_out = tmp_path / "turned-val"
    res = CliRunner().invoke(app, ["profile-faces", str(cfg), "--out", str(val_out), "--split", "val",
                                   "--low", "40", "--high", "50"])
    assert res.exit_code == 0 and "validation faces" in res.output, res.output
    assert {s.id.rsplit("_p", 1)[0] for s in read_dataset(f"300w:{val_out}")}.isdisjoint(train_ids)
    assert json.loads((val_out / "provenance.json").read_text())["split"] == "val"
    leak = tmp_path / "leak.yaml"
    leak.write_text(yaml.safe_dump({"data": {"train": [f"300w:{faces}", f"300w:{val_out}"],
                                             "cache_dir": str(tmp_path / "cache")}}))
    from facepoints.training.config import ConfigError

    with pytest.raises(ConfigError, match="made from val faces"):
        make_splits(load_config(leak))


def test_paste_patch_hides_exactly_the_points_under_it():
    from facepoints.data.augment import paste_patch

    img = np.zeros((64, 64, 3), np.uint8)
    donor = np.full((64, 64, 3), 200, np.uint8)
    pts = np.array([[x + 0.5, y + 0.5] for y in range(0, 64, 4) for x in range(0, 64, 4)], np.float32)
    rng = np.random.default_rng(3)
    for _ in range(20):
        out, vis = paste_patch(img, pts, np.ones(len(pts), np.float32), donor, rng)
        covered = out[..., 0] == 200
        assert 0 < covered.mean() < 0.25  # 15-45 % of each side
        under = covered[pts[:, 1].astype(int), pts[:, 0].astype(int)]
        np.testing.assert_array_equal(vis == 0, under)


def test_trust_only_training_moves_the_trust_branch_and_nothing_else(tmp_path):
    from safetensors.numpy import load_file

    from facepoints.training.config import ConfigError, load_config
    from facepoints.training.loop import train

    best = train(load_config(_tiny_trust_run(tmp_path)), progress=False)
    cfg = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    cfg.update(output=str(tmp_path / "trust-only"))
    cfg["model"]["init_from"] = str(best)
    cfg["optim"].update(trust_only=True, lr=0.01)
    cfg["augment"]["occluder_photos"] = 0.5
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    again = train(load_config(tmp_path / "t.yaml"), progress=False)
    a, b = load_file(str(best)), load_file(str(again))
    moved = {k for k in a if not np.array_equal(a[k], b[k])}
    assert moved and all("trust_branch" in k for k in moved), sorted(moved)[:5]
    assert any(k.endswith("weight") for k in moved)  # the branch learned, BatchNorm statistics of the rest kept
    cfg["model"]["pip_trust"] = False
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="trust_only"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("option", [{"pip_trust_kernel": 3}, {"pip_trust_points": True}])
def test_a_trust_branch_with_more_context_trains_on_a_trained_model_and_exports(tmp_path, option):
    """Two ways to give visibility more to see: a 3 x 3 trust branch (starts fresh on a
    1 x 1 start) and point features (added to the start's branch, starting at zero)."""
    import torch
    from safetensors.numpy import load_file

    import facepoints
    from facepoints.deploy.export import export_model
    from facepoints.models.package import load_model
    from facepoints.training.config import ConfigError, load_config
    from facepoints.training.loop import build_network, train

    best = train(load_config(_tiny_trust_run(tmp_path)), progress=False)
    cfg = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    cfg.update(output=str(tmp_path / "more"))
    cfg["model"].update(init_from=str(best), **option)
    cfg["optim"].update(trust_only=True, lr=0.01)
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(cfg))
    if "pip_trust_points" in option:  # before it learns, the grown model predicts what its start did
        from facepoints.training.loop import load_data

        conf = load_config(tmp_path / "more.yaml")
        grown, _ = build_network(conf, load_data(conf, progress=False))
        start, _ = load_model(best)
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            for a, b in zip(grown.eval().with_trust(x), start.eval().with_trust(x)):
                torch.testing.assert_close(a, b)
    again = train(load_config(tmp_path / "more.yaml"), progress=False)
    a, b = load_file(str(best)), load_file(str(again))
    assert {k for k in a if k in b and "trust_" not in k and not np.array_equal(a[k], b[k])} == set()
    first = "head.trust_branch.0.weight"
    if "pip_trust_kernel" in option:
        assert a[first].shape[2:] == (1, 1) and b[first].shape[2:] == (3, 3)
    else:
        assert not any("trust_points" in k for k in a)
        assert np.abs(b["head.trust_points.weight"]).max() > 0  # it learned
    model, info = load_model(again)  # the model file rebuilds the branch by itself
    assert all(info.architecture().kwargs[k] == v for k, v in option.items()) and model.has_trust
    report = export_model(again, "onnx", tmp_path / "more.onnx")
    assert report.ok and report.visible_diff < 1e-3 and report.radius_diff < 1e-3  # trust outputs compared too
    import dataclasses

    assert not dataclasses.replace(report, visible_diff=0.05).ok and not dataclasses.replace(report, trust_lost=True).ok
    face = facepoints.load(tmp_path / "more.onnx", detector=None).predict(
        np.full((240, 240, 3), 128, np.uint8), landmark_boxes=[[60, 60, 180, 190]])[0]
    assert face.visible.shape == face.error_radius.shape == (68,)
    cfg["model"]["pip_trust"] = False
    cfg["optim"]["trust_only"] = False
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=next(iter(option))):
        load_config(tmp_path / "bad.yaml")
