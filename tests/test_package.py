import json

import pytest
import torch
from safetensors.torch import save_file

from facepoints.models.network import build_model
from facepoints.models.package import ModelFileError, ModelInfo, load_checkpoint, load_model, read_info, save_model
from facepoints.schemes import FIVE


def _info():
    return ModelInfo(scheme=FIVE.to_dict(), backbone="mobilenet_v3_small", head="regression",
                     input_size=40, crop_scale=1.4, training_data="synthetic", metrics={"val_nme_io": 3.2})


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 5).eval()
    save_model(model, _info(), tmp_path / "m.safetensors")
    loaded, info = load_model(tmp_path / "m.safetensors")
    assert info.input_size == 40 and info.crop_scale == 1.4 and info.landmark_scheme == FIVE
    assert info.metrics == {"val_nme_io": 3.2} and info.version
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x))


def test_foreign_and_damaged_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="without facepoints metadata"):
        load_model(foreign)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="not a facepoints model"):
        read_info(junk)
    with pytest.raises(ModelFileError, match="no such model"):
        load_model(tmp_path / "missing.safetensors")


def test_checkpoint_loading_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(ModelFileError, match="holds code") as e:
        load_checkpoint(p)
    assert "weights_only set to False" not in str(e.value) and "Re-running" not in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ModelFileError, match="not a readable facepoints checkpoint"):
        load_checkpoint(junk)


def test_bundled_models_by_name(tmp_path, monkeypatch):
    from pathlib import Path

    from facepoints.models.package import BUNDLED, BUNDLED_MODELS, model_file

    monkeypatch.chdir(tmp_path)
    assert model_file(None) == BUNDLED == model_file("default")
    assert BUNDLED_MODELS["fast"].is_file()
    default, fast = read_info("default"), read_info("fast")
    assert (default.input_size, default.head) == (160, "pip") and fast.input_size == 112  # fast: the smaller input
    assert default.landmark_scheme.num_points == fast.landmark_scheme.num_points == 68
    # a file of that name in the working directory is what the user means
    (tmp_path / "fast").write_bytes(b"not a model")
    assert model_file("fast") == Path("fast")
    with pytest.raises(ModelFileError, match="fast"):
        load_model("fast")
    assert model_file("runs/x.safetensors").as_posix() == "runs/x.safetensors"


def test_a_tampered_tensor_is_refused(tmp_path):
    """100 bytes flipped inside the tensor data (the metadata untouched): refused with
    one line, by load_model, by predict and by export."""
    import json
    import struct

    from typer.testing import CliRunner

    from facepoints.cli import app
    from facepoints.models.package import BUNDLED

    data = bytearray(BUNDLED.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    start = 8 + header + len(data[8 + header:]) // 2
    data[start:start + 100] = bytes(b ^ 0x5A for b in data[start:start + 100])
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    assert json.loads(read_info(bad).to_json())  # the metadata still reads
    with pytest.raises(ModelFileError, match="weights were changed after the file was written"):
        load_model(bad)
    env = {"FACEPOINTS_CACHE": str(tmp_path / "cache")}
    for args in (["predict", "examples/astronaut.jpg", "--model", str(bad)],
                 ["export", "--model", str(bad), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]):
        r = CliRunner().invoke(app, args, env=env)
        assert r.exit_code == 2 and "weights were changed" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "x.onnx").exists()


def test_model_files_in_the_old_layout_still_load(tmp_path):
    """Written before the architecture record, calibrations and content hash: backbone,
    head and recipe["model_kwargs"] say what to build, nothing to verify."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 5, input_size=40, dropout=0.1).eval()
    old = json.loads(_info().to_json())
    for key in ("network", "box_calibrations", "tensors_sha256", "exported_from"):
        old.pop(key)
    old["recipe"] = {"model_kwargs": {"input_size": 40, "dropout": 0.1}}
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"facepoints": json.dumps(old)})
    loaded, info = load_model(path)
    assert info.tensors_sha256 == "" and info.architecture().kwargs == {"input_size": 40, "dropout": 0.1}
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x))


def test_a_model_crops_by_the_calibration_it_was_made_with(tmp_path):
    """A model file's recorded detector calibration is what the Predictor uses, not the
    detector's current constants."""
    import numpy as np

    import facepoints
    from facepoints.data.calibration import DETECTOR_CALIBRATIONS, BoxCalibration
    from facepoints.models.package import BUNDLED

    model, info = load_model(BUNDLED)
    assert info.box_calibrations["yunet"] == DETECTOR_CALIBRATIONS["yunet"].to_dict()
    info.box_calibrations = {"yunet": {"dx": 0.0, "dy": 0.0, "sw": 0.5, "sh": 0.5}}
    save_model(model, info, tmp_path / "m.safetensors")
    p = facepoints.load(tmp_path / "m.safetensors", runtime="torch")
    box = np.array([[100.0, 100.0, 200.0, 200.0]])
    np.testing.assert_allclose(p.to_landmark_box(box), [[125, 125, 175, 175]])
    np.testing.assert_allclose(facepoints.load().to_landmark_box(box), DETECTOR_CALIBRATIONS["yunet"].apply(box))
    assert BoxCalibration(**info.box_calibrations["yunet"]).sw == 0.5
