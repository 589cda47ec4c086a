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
    with pytest.raises(ModelFileError, match="not a readable facepoints checkpoint"):
        load_checkpoint(p)


def test_bundled_models_by_name(tmp_path, monkeypatch):
    from pathlib import Path

    from facepoints.models.package import BUNDLED, BUNDLED_MODELS, model_file

    monkeypatch.chdir(tmp_path)
    assert model_file(None) == BUNDLED == model_file("default")
    assert BUNDLED_MODELS["fast"].is_file()
    default, fast = read_info("default"), read_info("fast")
    assert default.input_size == 112 and fast.input_size == 80  # the fast model is the small-input one
    assert default.landmark_scheme.num_points == fast.landmark_scheme.num_points == 68
    # a file of that name in the working directory is what the user means
    (tmp_path / "fast").write_bytes(b"not a model")
    assert model_file("fast") == Path("fast")
    with pytest.raises(ModelFileError, match="fast"):
        load_model("fast")
    assert model_file("runs/x.safetensors").as_posix() == "runs/x.safetensors"
