"""Files that lie (issue 31 #13, #14): one validator for every model format refuses
metadata that would crash, allocate without bound or mislabel, with one line."""

import json
import math

import onnx
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLES
from facepoints.cli import app
from facepoints.models.info import BUNDLED_ONNX, ModelFileError
from facepoints.inference.runtime import OnnxRunner


def _with_meta(tmp_path, name, change):
    proto = onnx.load(str(BUNDLED_ONNX["fast"]))
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta["facepoints"])
    info = change(info)
    del proto.metadata_props[:]
    p = proto.metadata_props.add()
    p.key, p.value = "facepoints", json.dumps(info)
    out = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(out))
    return out


def _set(path, value):
    def change(info):
        node = info
        *parents, leaf = path.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
        return info
    return change


CASES = {
    "input_96": (_set("input_size", 96), "the graph takes"),
    "input_0": (_set("input_size", 0), "input_size 0"),
    "input_huge": (_set("input_size", 100000), "input_size 100000"),
    "crop_nan": (_set("crop_scale", math.nan), "crop_scale"),
    "scheme_five": (lambda i: {**i, "scheme": {"name": "five", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]]}},
                    "points"),
    "as_list": (lambda i: [i], "damaged facepoints metadata"),
    "detect_size_1": (_set("recipe.inference.detect_size", 1), "detect_size 1"),
    "refine_1000": (_set("recipe.inference.refine", 1000), "refine 1000"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lying_onnx_metadata_is_refused_with_one_line(tmp_path, case):
    change, says = CASES[case]
    bad = _with_meta(tmp_path, case, change)
    with pytest.raises(ModelFileError, match=says):
        OnnxRunner(bad).info()
    r = CliRunner().invoke(app, ["predict", str(EXAMPLES / "biden.jpg"), "--model", str(bad), "--json"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output


def test_a_safetensors_file_whose_scheme_disagrees_with_its_tensors_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    src = BUNDLED_ONNX["fast"].with_suffix(".safetensors")
    with safe_open(str(src), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["facepoints"])
    info["scheme"] = {"name": "five", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]]}
    out = tmp_path / "five-over-68.safetensors"
    save_file(tensors, str(out), metadata={"facepoints": json.dumps(info)})
    from facepoints.models.info import read_info

    with pytest.raises(ModelFileError, match="has 5 points, the network 68"):
        read_info(out)
