"""The wheel: built from the checkout, installed into a new virtual environment in another
folder, it runs `facepoints predict` and `facepoints info` with the bundled models, the
checkout out of reach (its dependencies come from the test environment's site-packages,
added as a plain path, so the checkout's editable install is not active there)."""

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from conftest import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_models_and_runs_without_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("facepoints-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("facepoints/weights/default.onnx", "facepoints/weights/fast.onnx", "facepoints/weights/default.safetensors",
              "facepoints/weights/blazeface_short_range.onnx", "facepoints/data/canonical_face.npz",
              "facepoints/curation/review_page.html"):
        assert f in names, f
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as z:  # what pip would put there, without reaching for the network
        z.extractall(site)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(EXAMPLES / "astronaut.jpg", work / "photo.jpg")
    code = ("import sys, facepoints.cli as c; sys.argv = ['facepoints'] + sys.argv[1:]; c.app()")
    run = lambda *args: subprocess.run([str(py), "-c", code, *args], cwd=work, capture_output=True, text=True,
                                       timeout=300)
    r = run("predict", "photo.jpg", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert len(record["faces"]) == 1 and len(record["faces"][0]["landmarks"]) == 68
    r = run("info", "--model", "fast")
    assert r.returncode == 0, r.stderr
    where = subprocess.run([str(py), "-c", "import facepoints, sys; print(facepoints.__file__); "
                            "facepoints.load().predict('photo.jpg'); print('torch' in sys.modules)"],
                           cwd=work, capture_output=True, text=True, timeout=300).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == "False"  # the wheel's copy, and no PyTorch imported
