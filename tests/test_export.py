"""ONNX and TorchScript exports: they reproduce the PyTorch landmarks on detector
crops of the example photos, carry the metadata, and run behind the Predictor."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import facepoints
from facepoints.cli import app
from facepoints.data.images import read_image
from facepoints.deploy.export import export_model, load_torchscript, read_onnx_info
from facepoints.deploy.runners import TorchRunner, file_sha256
from facepoints.inference.runtime import OnnxRunner
from facepoints.models.package import ModelFileError, read_info
from conftest import EXAMPLES
from helpers import write_random_model

PHOTOS = sorted(EXAMPLES.glob("*.jpg"))
runner = CliRunner()


class CachedDetector:
    """YuNet, detecting each photo once for all the tests here (it is the slow part)."""

    def __init__(self):
        from facepoints.inference.detectors import get_detector

        self.inner, self.cache = get_detector("yunet"), {}

    def detect(self, image):
        key = hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]

    def to_landmark_box(self, boxes):
        return self.inner.to_landmark_box(boxes)


DETECTOR = CachedDetector()


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("model") / "small.safetensors", metrics={"nme_io": 99.0})


@pytest.fixture(scope="module")
def onnx_export(small_model):
    out = small_model.with_name("small.onnx")
    return out, export_model(small_model, "onnx", out, detector=DETECTOR)


@pytest.fixture(scope="module")
def ts_export(small_model):
    out = small_model.with_name("small.ts")
    return out, export_model(small_model, "torchscript", out, detector=DETECTOR)


def test_onnx_reproduces_pytorch_on_example_photos(onnx_export, small_model):
    out, report = onnx_export
    print(report.summary())
    assert out.is_file() and report.ok
    assert report.images == len(PHOTOS) and report.faces >= len(PHOTOS)  # the composite has two
    assert report.max_diff_px <= 0.1 and report.nme_change < 0.1
    # metadata survives, under metadata_props["facepoints"]
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    want = json.loads(read_info(small_model).to_json())
    want["exported_from"] = {"file": "small.safetensors", "sha256": file_sha256(small_model)}  # which file it came from
    assert json.loads(meta["facepoints"]) == want
    assert json.loads(read_onnx_info(out).to_json()) == want
    # opset 17, dynamic batch axis
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in proto.opset_import)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    run = OnnxRunner(out)
    for b in (1, 5):
        assert run(np.random.rand(b, 3, 64, 64).astype(np.float32)).shape == (b, 68, 2)


def test_torchscript_reproduces_pytorch_on_example_photos(ts_export, small_model):
    out, report = ts_export
    print(report.summary())
    assert out.is_file() and report.ok and report.faces >= len(PHOTOS)
    assert report.max_diff_px <= 0.1
    module, info = load_torchscript(out)
    assert info.exported_from["sha256"] == file_sha256(small_model)
    info.exported_from = {}
    assert info.to_json() == read_info(small_model).to_json()
    with torch.no_grad():
        assert module(torch.rand(3, 3, 64, 64)).shape == (3, 68, 2)


def test_onnx_backed_predictor_matches_torch_predictor(onnx_export, small_model):
    out, _ = onnx_export
    ref = facepoints.load(small_model, detector=DETECTOR, runtime="torch")
    ort_pred = facepoints.load(out, detector=DETECTOR)
    assert isinstance(ort_pred.run, OnnxRunner) and isinstance(ref.run, TorchRunner)
    assert ort_pred.info.exported_from == {"file": small_model.name, "sha256": file_sha256(small_model)}
    ort_pred.info.exported_from = {}
    assert ort_pred.info.to_json() == ref.info.to_json() and ort_pred.scheme.name == "ibug68"
    worst, faces = 0.0, 0
    for photo in PHOTOS:
        img = read_image(photo)
        a, b = ref.predict(img), ort_pred.predict(img)
        assert len(a) == len(b) >= 1
        for fa, fb in zip(a, b):
            np.testing.assert_array_equal(fa.box, fb.box)
            pa, pb = fa.landmarks, fb.landmarks
            assert pb.shape == (68, 2)
            worst = max(worst, float(np.abs(pa - pb).max()))
            faces += 1
    print(f"ORT vs torch Predictor, {faces} faces: max difference {worst:.4f} px")
    assert worst <= 0.1


def test_onnx_predictor_threads_and_onnx_without_metadata(onnx_export, tmp_path):
    out, _ = onnx_export
    p = facepoints.load(out, detector=None, threads=2)
    assert p.run.session.get_session_options().intra_op_num_threads == 2
    assert OnnxRunner(out).session.get_session_options().intra_op_num_threads == 1
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    with pytest.raises(ModelFileError, match="without facepoints metadata"):
        facepoints.load(foreign)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx at all")
    with pytest.raises(ModelFileError, match="not a readable ONNX"):
        facepoints.load(tmp_path / "junk.onnx")


def test_export_cli(small_model, tmp_path):
    out = tmp_path / "cli.onnx"
    one = str(EXAMPLES / "astronaut.jpg")
    r = runner.invoke(app, ["export", "--model", str(small_model), "--format", "onnx", "--out", str(out), "--images", one])
    assert r.exit_code == 0, r.output
    assert "max landmark difference" in r.output and "NME change" in r.output and out.is_file()
    # an impossible tolerance: non-zero exit and no file left behind
    bad = tmp_path / "bad.ts"
    r = runner.invoke(app, ["export", "--model", str(small_model), "--format", "torchscript", "--out", str(bad),
                            "--images", one, "--tolerance", "-1"])
    assert r.exit_code == 1 and "does not reproduce" in r.output and not bad.exists()
    assert not list(tmp_path.glob(".*tmp*"))
    r = runner.invoke(app, ["export", "--model", str(small_model), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "unknown format" in r.output
    # `facepoints info` reads the exported file's metadata: the same as the source model's
    r = runner.invoke(app, ["info", "--model", str(out), "--json"])
    assert r.exit_code == 0, r.output
    exported, source = json.loads(r.stdout), json.loads(read_info(small_model).to_json())
    assert exported["scheme"] == source["scheme"] and exported["input_size"] == source["input_size"]
    assert exported["precision"] == "fp32"
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    r = runner.invoke(app, ["info", "--model", str(tmp_path / "junk.onnx")])
    assert r.exit_code == 2 and "not a readable ONNX model" in r.output


@pytest.mark.parametrize("name", ["default", "fast"])
def test_bundled_onnx_files_are_current_and_reproduce_pytorch(name, tmp_path, monkeypatch):
    """The packaged ONNX files (what inference runs) are made from the packaged
    .safetensors files as they are now (python -m facepoints.deploy.bundle), and
    give the PyTorch model's landmarks."""
    from facepoints.deploy.bundle import staleness
    from facepoints.models.package import BUNDLED_MODELS, BUNDLED_ONNX, load_model

    assert staleness(name) is None
    model, info = load_model(name)
    x = np.random.default_rng(0).random((4, 3, info.input_size, info.input_size), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = OnnxRunner(BUNDLED_ONNX[name])(x)
    assert np.abs(got - want).max() * (info.input_size - 1) < 0.01  # crop pixels
    changed = tmp_path / "m.safetensors"  # new weights: the ONNX file is out of date
    changed.write_bytes(BUNDLED_MODELS[name].read_bytes() + b" ")
    monkeypatch.setitem(BUNDLED_MODELS, name, changed)
    assert "made from" in staleness(name)
