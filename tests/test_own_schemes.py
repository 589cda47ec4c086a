"""Own point schemes (issue 27): conversions the geometry defines, evaluating a model on
another scheme's labels, and face-detector calibrations fitted per model, refused (not
borrowed from the 68 points) where a detector finds too few faces."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import facepoints
from conftest import EXAMPLES
from facepoints.cli import app
from facepoints.data.convert import WFLW98_TO_IBUG68, convert, model_box
from facepoints.data.formats import read_dataset, write_pts
from facepoints.data.samples import Dataset, Sample, landmark_box
from facepoints.errors import FacepointsError
from facepoints.schemes import FIVE
from helpers import synthetic_face_shape


def test_68_to_five_is_eye_centres_nose_tip_and_mouth_corners():
    p = synthetic_face_shape()
    five = convert(p, "ibug68", "five")
    np.testing.assert_allclose(five[0], p[36:42].mean(0), atol=1e-5)
    np.testing.assert_allclose(five[1], p[42:48].mean(0), atol=1e-5)
    np.testing.assert_allclose(five[2:], p[[30, 48, 54]], atol=1e-5)
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left first, as CUHK's files
    batch = convert(np.stack([p, p + 1]), 68, 5)
    assert batch.shape == (2, 5, 2) and np.allclose(batch[1], five + 1)


def test_98_to_68_takes_the_published_table_and_unknown_pairs_are_refused():
    w = np.arange(98 * 2, dtype=np.float32).reshape(98, 2)
    out = convert(w, "wflw98", "ibug68")
    assert out.shape == (68, 2) and out[0, 0] == 0 and out[16, 0] == 64 and out[48, 0] == 152
    assert len(set(WFLW98_TO_IBUG68)) == 68 and convert(w, 98, "five").shape == (5, 2)
    with pytest.raises(FacepointsError, match="no conversion from five to ibug68"):
        convert(np.zeros((5, 2)), "five", "ibug68")


def test_a_68_point_model_is_scored_on_five_point_labels():
    """The bundled model on faces labelled with 5 points (from its own 68-point answer on
    the example photos): converted, from the 5-point box mapped to its crop."""
    predictor = facepoints.load()
    samples = []
    for path in sorted(EXAMPLES.glob("*.jpg"))[:3]:
        face = predictor.predict(path)[0]
        samples.append(Sample(path, convert(face.landmarks, 68, "five"), path.name))
    result = facepoints.evaluate(Dataset("five", FIVE, samples), predictor)
    assert result.summary["converted"] == "ibug68 -> five" and result.summary["n"] == 3
    assert result.summary["nme_io"] < 3.0  # the same model, another crop: close, not equal
    box = model_box(landmark_box(samples[0].landmarks), "five", "ibug68")
    assert (box[2] - box[0]) > 1.8 * np.ptp(samples[0].landmarks[:, 0])


def _five_point_run(tmp_path, faces_dir):
    cfg = {"name": "five", "seed": 0, "output": str(tmp_path / "run"),
           "data": {"train": [f"300w:{faces_dir}"], "val_fraction": 0.0, "cache_dir": str(tmp_path / "cache")},
           "model": {"backbone": "mobilenet_v3_small", "input_size": 48},
           "optim": {"batch_size": 2, "epochs": 1, "lr": 0.001}, "threads": 1}
    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_five_point_model_gets_its_own_detector_fit_or_a_refusal(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    predictor = facepoints.load()
    for path in sorted(EXAMPLES.glob("*.jpg")):
        for k, face in enumerate(predictor.predict(path)):
            stem = f"{path.stem}_{k}"
            (faces / f"{stem}.jpg").write_bytes(path.read_bytes())
            write_pts(convert(face.landmarks, 68, "five"), faces / f"{stem}.pts")
    r = CliRunner().invoke(app, ["train", str(_five_point_run(tmp_path, faces)), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "detector yunet: refused" in r.output and "fewer than 20" in r.output  # 7 faces: too few
    best = tmp_path / "run" / "best.safetensors"
    info = json.loads(CliRunner().invoke(app, ["info", "--model", str(best), "--json"]).stdout)
    assert info["box_calibrations"] == {} and "refused" in info["recipe"]["detector_fit"]["yunet"]
    with pytest.raises(FacepointsError, match="cannot use the 'yunet' face detector"):
        facepoints.load(best, detector="yunet").predict(EXAMPLES / "biden.jpg")
    # with a lower bar (a handful of faces), the fit is made on this model's own crops
    from facepoints.deploy.detector_fit import calibrate_detectors

    fits = calibrate_detectors(best, read_dataset(f"300w:{faces}").samples, ("yunet",), out=tmp_path / "fit.safetensors",
                               min_faces=3)
    assert fits[0].matched == 7 and fits[0].calibration.sw < 0.7  # the five points span about half a detector box
    fitted = facepoints.load(tmp_path / "fit.safetensors", detector="yunet")
    faces_found = fitted.predict(EXAMPLES / "biden.jpg")
    assert len(faces_found) == 1 and faces_found[0].landmarks.shape == (5, 2)
    # whole-photo evaluation matches each labelled face by its landmark box (a detector box
    # against a 5-point box overlaps too little to tell a right match): none missed
    ev = facepoints.evaluate(read_dataset(f"300w:{faces}"), fitted, use_detector=True)
    assert ev.summary["n_missed"] == 0 and ev.summary["n"] == 7


def test_train_own_data_without_a_yaml_and_the_template_it_prints(tmp_path):
    from facepoints.training.config import load_config
    from helpers import write_300w_folder

    faces = write_300w_folder(tmp_path / "faces", n=8)
    r = CliRunner().invoke(app, ["train", "--print-config", "--data", f"300w:{faces}", "--epochs", "12"])
    assert r.exit_code == 0 and "init_from: default" in r.stdout and "epochs: 12" in r.stdout
    (tmp_path / "t.yaml").write_text(r.stdout)
    cfg = load_config(tmp_path / "t.yaml")
    assert cfg.model.init_from == "default" and cfg.optim.epochs == 12 and cfg.data.train[0].spec == f"300w:{faces}"
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", f"300w:{faces}", "--epochs", "1", "--output", str(out),
                                 "--set", "model.input_size=64", "--set", "optim.batch_size=4", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (out / "best.safetensors").is_file() and (out / "train.yaml").is_file()
    assert CliRunner().invoke(app, ["train", str(tmp_path / "t.yaml"), "--data", "300w:x"]).exit_code == 2
    # with a config, --print-config shows that config as it would run: overrides applied, paths absolute
    r = CliRunner().invoke(app, ["train", str(tmp_path / "t.yaml"), "--print-config", "--epochs", "3",
                                 "--set", "model.input_size=96", "--output", "elsewhere"])
    assert r.exit_code == 0, r.output
    shown = yaml.safe_load(r.stdout)
    assert shown["optim"]["epochs"] == 3 and shown["model"]["input_size"] == 96
    assert shown["data"]["train"][0]["spec"] == f"300w:{faces}" and Path(shown["output"]).is_absolute()
    assert not (tmp_path / "elsewhere").exists() and not Path("elsewhere").exists()  # nothing trained or made
    r = CliRunner().invoke(app, ["train", str(tmp_path / "t.yaml"), "--print-config", "--set", "model.input_size=7"])
    assert r.exit_code == 2 and "input_size" in r.output


def test_a_five_point_run_starts_from_the_default_trunk(tmp_path):
    import torch

    from facepoints.models.package import load_model
    from facepoints.training.config import load_config
    from facepoints.training.loop import train
    from helpers import write_300w_folder

    faces68 = write_300w_folder(tmp_path / "f68", n=6)
    faces5 = tmp_path / "f5"
    faces5.mkdir()
    for s in read_dataset(f"300w:{faces68}").samples:
        (faces5 / s.image.name).write_bytes(s.image.read_bytes())
        write_pts(convert(s.landmarks, 68, "five"), faces5 / (s.image.stem + ".pts"))
    path = _five_point_run(tmp_path, faces5)
    cfg = load_config(path, {"model.backbone": "mobilenet_v2", "model.head": "pip", "model.init_from": "default",
                             "model.input_size": 64, "max_steps": 1, "optim.lr": 1e-12, "optim.weight_decay": 0.0})
    model, info = load_model(train(cfg, progress=False))
    bundled, _ = load_model("default")
    assert info.landmark_scheme.num_points == 5
    a = dict(model.trunk.named_parameters())["0.0.weight"]
    assert torch.allclose(a, dict(bundled.trunk.named_parameters())["0.0.weight"], atol=1e-6)
