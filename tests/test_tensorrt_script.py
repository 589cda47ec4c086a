"""benchmarks/tensorrt_fp16.py needs an NVIDIA GPU and the tensorrt package. Where
either is missing it must say which, measure nothing and exit 2. Only that path is
tested: no machine of this project has a GPU."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "tensorrt_fp16.py"


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(tmp_path, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "trt.md")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_gpu(), reason="a CUDA GPU is present: the no-GPU message cannot be seen here")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    # a stand-in tensorrt package, so that the missing GPU is the only problem
    fake = tmp_path / "fake"
    (fake / "tensorrt").mkdir(parents=True)
    (fake / "tensorrt" / "__init__.py").write_text('__version__ = "10.0.0"\n')
    r = _run(tmp_path, {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA GPU visible" in r.stderr and "nothing was measured" in r.stderr
    assert "tensorrt Python package is not installed" not in r.stderr
    assert not (tmp_path / "trt.md").exists() and r.stdout == ""


@pytest.mark.skipif(_gpu() and importlib.util.find_spec("tensorrt") is not None,
                    reason="GPU and tensorrt present: the script would really run")
def test_without_tensorrt_or_gpu_it_names_what_is_missing(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    if importlib.util.find_spec("tensorrt") is None:
        assert "pip install tensorrt" in r.stderr
    if not _gpu():
        assert "no CUDA GPU visible" in r.stderr
    assert not (tmp_path / "trt.md").exists()
